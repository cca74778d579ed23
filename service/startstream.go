package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/tether-io/tether/internal/muxconn"
	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/internal/wsframe"
)

// Stream is a stream StartStream began: a net.Conn whose first bytes may
// leave before the device accepted it, which saves the round trip of
// waiting. It also has the methods of OpenStream's conn over a Tether hub
// (CloseWrite, Done, Err, Abort; see CloseError).
//
// Until the hub answers, Write sends at once and keeps a copy of what it
// sent; once the copy and its framing fill a stream's window
// (muxconn.Window, 256 KiB), Write waits for the answer. Read waits for
// the answer. Accepted waits for it and returns the error OpenStream
// would have returned. When the stream was not accepted (a rejection, an
// offline device, a hub that did not answer), every Read, Write and
// CloseWrite returns that error, and Unsent returns what Write took: the
// hub never delivered it.
//
// A Stream is safe for concurrent use as a net.Conn is.
type Stream struct {
	conn net.Conn       // the stream: a *wsconn.Conn but for tests that stub dial
	ys   *sessionStream // the session stream under conn; nil when the stream is not on a session
	what string         // `stream "ssh" to device "dev1"`, for errors

	answered  chan struct{} // closed once the answer is known
	closed    chan struct{} // closed by Close and Abort
	closeOnce sync.Once

	// wmu orders Write and CloseWrite, so that the copy is in the order
	// the bytes went out.
	wmu sync.Mutex

	mu sync.Mutex
	// known is set once the answer is known; err, sessionLost and held
	// are final then, and answered is closed right after.
	known bool
	// err is the answer's error, nil when it accepted the stream.
	err error
	// sessionLost says the session ended before the answer: the stream
	// may be opened again.
	sessionLost bool
	// closing is set when Close or Abort came before the answer, which
	// nobody waits for then.
	closing bool
	held    []byte // what Write sent before the answer
	// budget is what the window still takes before the answer: the bytes
	// of frames, headers included.
	budget int
	// readAt is the caller's read deadline, for the session stream once
	// the answer was read from it.
	readAt time.Time
	// done is Done's channel while the answer is not known (see Done).
	done       chan struct{}
	doneWanted bool

	rd, wd deadline // the read and write deadlines of waits for the answer
}

// StartStream asks the device for a stream named streamName, as
// OpenStream does, but returns as soon as the request left on the
// client's session: the caller's first bytes follow it at once instead of
// a round trip later. Accepted tells how the device answered. Without a
// session (a hub without sessions, Options.NoSessions, a session that
// could not be dialled just now) it opens the stream fully first, so its
// error is then OpenStream's and the Stream is accepted already. ctx
// bounds the start, not the Stream.
func (c *Client) StartStream(ctx context.Context, deviceID, streamName string) (*Stream, error) {
	if err := checkStream(deviceID, streamName); err != nil {
		return nil, err
	}
	st, err := c.startOnSession(ctx, deviceID, streamName)
	if !errors.Is(err, errUseStreams) {
		return st, err
	}
	conn, err := c.openByStreams(ctx, deviceID, streamName)
	if err != nil {
		return nil, err
	}
	s := &Stream{conn: conn, what: streamWhat(deviceID, streamName), known: true, answered: make(chan struct{}), closed: make(chan struct{})}
	close(s.answered)
	return s, nil
}

func streamWhat(deviceID, streamName string) string {
	return fmt.Sprintf("stream %q to device %q", streamName, deviceID)
}

// newSessionStream is the Stream of st, whose header of hdrLen bytes went
// out, and reads its answer.
func (c *Client) newSessionStream(st *sessionStream, hdrLen int, deviceID, streamName string) *Stream {
	s := &Stream{
		conn:     wsconn.OnSession(st),
		ys:       st,
		what:     streamWhat(deviceID, streamName),
		answered: make(chan struct{}),
		closed:   make(chan struct{}),
		done:     make(chan struct{}),
		budget:   muxconn.Window - hdrLen,
	}
	go s.await(c, deviceID, streamName)
	return s
}

// await reads the answer, within the response timeout and slack, as the
// POST's answer is awaited.
func (s *Stream) await(c *Client, deviceID, streamName string) {
	s.ys.SetReadDeadline(time.Now().Add(c.opts.ResponseTimeout + slack))
	lost, err := c.readAnswer(s.ys, deviceID, streamName)
	s.mu.Lock()
	closing := s.closing
	if closing && err != nil {
		err = net.ErrClosed
	}
	s.ys.SetReadDeadline(s.readAt)
	s.known, s.err, s.sessionLost = true, err, lost
	if err == nil {
		s.held = nil
	}
	forward := err == nil && s.doneWanted
	s.mu.Unlock()
	if err != nil {
		// Before answered: whoever saw the answer sees the stream over.
		close(s.done)
	}
	close(s.answered)
	switch {
	case err != nil:
		if !closing {
			// The hub reset the stream, or never answered: nothing of it
			// is left to close but its place on the session.
			s.ys.Close()
		}
	case forward:
		go func() {
			<-s.conn.(*wsconn.Conn).Done()
			close(s.done)
		}()
	}
}

// answer is the answer's error once answered is closed.
func (s *Stream) answer() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Accepted waits for the answer to the stream's request and returns nil
// when the device accepted, or the error OpenStream would have returned:
// a *RejectError, an *APIError, ErrTimeout and so on. ctx bounds the
// wait only: when it ends, the stream goes on waiting.
func (s *Stream) Accepted(ctx context.Context) error {
	select {
	case <-s.answered:
		return s.answer()
	default:
	}
	select {
	case <-s.answered:
		return s.answer()
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", s.what, ctx.Err())
	}
}

// Unsent returns what Write took before the answer when the stream was
// not accepted: the hub delivered none of it, and the caller may send it
// elsewhere. It is nil while the answer is not known, after an
// acceptance, and after Close or Abort before the answer.
func (s *Stream) Unsent() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.known || s.err == nil || s.closing {
		return nil
	}
	return s.held
}

// wait waits for the answer, until d passes (nil: no deadline) or the
// stream is closed, and returns the answer's error.
func (s *Stream) wait(d *deadline) error {
	select {
	case <-s.answered:
		return s.answer()
	default:
	}
	for {
		var passed, changed <-chan struct{}
		if d != nil {
			passed, changed = d.chans()
		}
		select {
		case <-s.answered:
			return s.answer()
		case <-passed:
			return os.ErrDeadlineExceeded
		case <-changed:
		case <-s.closed:
			return net.ErrClosed
		}
	}
}

// reserve takes, while the answer is not known, as much of b as the window
// holds in one frame, keeping a copy; k is how much. known reports that
// the answer came, err what it said.
func (s *Stream) reserve(b []byte) (k int, known bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known {
		return 0, true, s.err
	}
	k = min(len(b), s.budget)
	for k > 0 && wsframe.HeaderSize(k, true)+k > s.budget {
		k--
	}
	if k > 0 {
		s.held = append(s.held, b[:k]...)
		s.budget -= wsframe.HeaderSize(k, true) + k
	}
	return k, false, nil
}

// Read waits for the answer, then reads the stream.
func (s *Stream) Read(p []byte) (int, error) {
	if err := s.wait(&s.rd); err != nil {
		return 0, err
	}
	return s.conn.Read(p)
}

// WriteTo waits for the answer, then copies the stream to w as the
// stream's own WriteTo does. io.Copy uses it.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	if err := s.wait(&s.rd); err != nil {
		return 0, err
	}
	if wt, ok := s.conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{s.conn})
}

// Write sends p. Before the answer it keeps a copy, and waits for the
// answer once the window is full.
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	n := 0
	for n < len(p) {
		k, known, err := s.reserve(p[n:])
		switch {
		case known && err != nil:
			return n, err
		case known:
			m, err := s.conn.Write(p[n:])
			return n + m, err
		case k == 0:
			// The hub reads the window's bytes once the device accepted.
			if err := s.wait(&s.wd); err != nil {
				return n, err
			}
			continue
		}
		_, err = s.conn.Write(p[n : n+k])
		n += k
		if err != nil {
			// The hub ends a stream it did not accept: the answer says
			// why better than the broken write.
			if aerr := s.wait(nil); aerr != nil {
				return n, aerr
			}
			return n, err
		}
	}
	return n, nil
}

// ReadFrom sends what it reads from r: through Write until the stream is
// accepted, then as the stream's own ReadFrom does. io.Copy uses it.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	total, done, err := s.readFromPending(r)
	if done {
		return total, err
	}
	if err := s.wait(nil); err != nil {
		return total, err
	}
	var n int64
	if rf, ok := s.conn.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{s.conn}, r)
	}
	return total + n, err
}

// readFromPending is ReadFrom while the answer is to come, through Write;
// done says r ended or failed, or the stream did.
func (s *Stream) readFromPending(r io.Reader) (total int64, done bool, err error) {
	if !s.pending() {
		return 0, false, nil
	}
	bp := pendingBufs.Get().(*[]byte)
	defer pendingBufs.Put(bp)
	buf := *bp
	for s.pending() {
		n, rerr := r.Read(buf)
		if n > 0 {
			m, werr := s.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, true, werr
			}
		}
		if rerr == io.EOF {
			return total, true, nil
		}
		if rerr != nil {
			return total, true, rerr
		}
	}
	return total, false, nil
}

// pendingBufs are ReadFrom's buffers while the answer is to come, which
// it is for a moment only: a forwarder starting streams one after another
// reuses one rather than allocating one per stream.
var pendingBufs = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// lostSession reports, once the answer is known, whether the session
// ended before it.
func (s *Stream) lostSession() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.known && s.sessionLost
}

// pending reports whether the answer is still to come.
func (s *Stream) pending() bool {
	select {
	case <-s.answered:
		return false
	default:
		return true
	}
}

// CloseWrite sends the end-of-stream marker (see CloseError): this side
// sends no more, and reads go on. Before the answer the marker goes out
// at once too, behind what Write sent.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for {
		ok, err := s.reserveMarker()
		if err != nil {
			return err
		}
		if ok {
			break
		}
		if err := s.wait(&s.wd); err != nil {
			return err
		}
	}
	if hc, ok := s.conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return s.conn.Close()
}

// reserveMarker takes room for the end-of-stream marker in the window
// while the answer is not known; ok says it may go out now.
func (s *Stream) reserveMarker() (ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known {
		return s.err == nil, s.err
	}
	if size := wsframe.HeaderSize(0, true); s.budget >= size {
		s.budget -= size
		return true, nil
	}
	return false, nil
}

// Close ends the stream (see OpenStream's conn); before the answer, what
// Write sent is still delivered if the device accepts, and the stream
// then ends.
func (s *Stream) Close() error {
	s.stop()
	return s.conn.Close()
}

// Abort ends the stream as a failure, with a close code and reason the
// device reads (see CloseError).
func (s *Stream) Abort(code int, reason string) error {
	s.stop()
	if a, ok := s.conn.(interface{ Abort(int, string) error }); ok {
		return a.Abort(code, reason)
	}
	return s.conn.Close()
}

// stop marks the stream closed, and stops waiting for an answer nobody
// wants any more.
func (s *Stream) stop() {
	s.closeOnce.Do(func() { close(s.closed) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.known && s.ys != nil {
		s.closing = true
		s.ys.SetReadDeadline(time.Now())
	}
}

// cancel ends a stream whose opening the caller gave up: the session
// stream is reset, so that the hub drops what it holds of it and stops
// asking the device.
func (s *Stream) cancel() {
	s.stop()
	if s.ys != nil {
		s.ys.Reset()
	} else {
		s.conn.Close()
	}
}

// Done returns a channel closed once the stream is over both ways: its
// conn's Done once accepted, closed at once when it was not.
func (s *Stream) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known && s.err == nil {
		if d, ok := s.conn.(interface{ Done() <-chan struct{} }); ok {
			return d.Done()
		}
		return nil
	}
	s.doneWanted = true
	return s.done
}

// Err reports how the stream ended: nil while it is open or after a
// clean end, the *CloseError that cut it, or the answer's error when it
// was not accepted.
func (s *Stream) Err() error {
	s.mu.Lock()
	known, err, closing := s.known, s.err, s.closing
	s.mu.Unlock()
	if known && err != nil && !closing {
		return err
	}
	if e, ok := s.conn.(interface{ Err() error }); ok {
		return e.Err()
	}
	return nil
}

// LocalAddr returns the local network address of the connection to the
// hub.
func (s *Stream) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// RemoteAddr returns the hub's network address.
func (s *Stream) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	return s.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline of Read, the wait for the answer
// included.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rd.set(t)
	if !s.known && s.ys != nil {
		// The answer is being read from the session stream under its own
		// deadline; the caller's applies once it came.
		s.readAt = t
		return nil
	}
	return s.conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline of Write, the wait for the answer
// included.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.wd.set(t)
	return s.conn.SetWriteDeadline(t)
}

// deadline is a settable point in time for waits that are no conn's:
// passed is closed once it passed, changed whenever it is set, so that a
// wait in progress takes the new one.
type deadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	passed  chan struct{} // nil while no deadline is set
	changed chan struct{}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
	d.passed = nil
	if t.IsZero() {
		return
	}
	passed := make(chan struct{})
	d.passed = passed
	if dur := time.Until(t); dur > 0 {
		d.timer = time.AfterFunc(dur, func() { close(passed) })
	} else {
		close(passed)
	}
}

func (d *deadline) chans() (passed, changed <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.changed == nil {
		d.changed = make(chan struct{})
	}
	return d.passed, d.changed
}
