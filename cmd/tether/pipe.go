package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/tether-io/tether/service"
)

const pipeUsage = `usage: tether pipe DEVICE STREAM

Opens one stream named STREAM to DEVICE and joins it to stdin and stdout,
as ssh's ProxyCommand wants:

  ssh -o ProxyCommand='tether pipe %h ssh' user@DEVICE

EOF on stdin is passed on to the device; the device ending the stream
closes stdout. Only the stream's bytes go to stdout; errors go to stderr.
With a Tether hub, stdin's first bytes leave with the stream's request;
--no-sessions (or TETHER_SESSIONS=0) opens the stream on a connection of
its own, before reading stdin.
`

// pipeStdin is what pipe reads; tests replace it. Its stdout is the
// command's (globals.Stdout), os.Stdout when run from main.
var pipeStdin io.Reader = os.Stdin

func cmdPipe(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("pipe", pipeUsage)
	noSessions := sessionsFlag(fs)
	// Help goes to stderr too: stdout carries nothing but the stream.
	pos, err := g.parseHelpTo(fs, args, g.Stderr)
	if err != nil {
		return err
	}
	if g.noSessions, err = sessionsOff(*noSessions); err != nil {
		return err
	}
	device, stream, err := deviceAndStream(pos, "tether pipe DEVICE STREAM")
	if err != nil {
		return err
	}
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()

	// stdin's first bytes follow the stream's request at once, on a
	// session, rather than a round trip later.
	st, err := c.StartStream(ctx, device, stream)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return explainStreamError(err, c, device, stream)
	}
	defer st.Close()
	local := newStdio(pipeStdin, g.Stdout)
	defer local.Close()
	// A signal ends the pipe as it ends forward: relay aborts the stream
	// and closes both sides. A stream that was cut is an error, with how
	// far each direction got, so that a truncated transfer does not exit 0.
	err = relay(ctx, local, st, "stdin → device", "device → stdout")
	switch {
	case ctx.Err() != nil:
		return nil
	case refusal(st) != nil:
		// The device said no after stdin's first bytes left: the same
		// error as when it says no before.
		return explainStreamError(refusal(st), c, device, stream)
	}
	return err
}

// explainStreamError is explainHubError for OpenStream, which can also
// fail because the device said no.
func explainStreamError(err error, c *service.Client, device, stream string) error {
	if errors.Is(err, service.ErrRejected) {
		return explainRejection(err, device, stream)
	}
	return explainHubError(err, c, device)
}

// stdio presents stdin and stdout as the one net.Conn that relay copies
// to and from. CloseWrite closes stdout, which is how the end of the
// stream reaches whoever reads it (ssh waits for EOF on its ProxyCommand's
// output).
//
// Reads go through a goroutine so that a read deadline can end a Read
// blocked on stdin: stdin is usually a blocking pipe, whose own
// SetReadDeadline fails, and relay sets one to stop reading local input
// once the stream has ended. Without it pipe would hang after the device
// closed the stream until stdin happened to end.
type stdio struct {
	in  io.Reader
	out io.Writer

	chunks  chan []byte   // data read from in, handed to Read
	free    chan []byte   // buffers Read has emptied, back to the reader
	eof     chan struct{} // closed after in's last chunk; readErr is set then
	readErr error
	pending []byte // what Read has left of the current chunk
	reading []byte // pending's whole buffer, to give back once empty

	rd pipeDeadline

	closeOnce, outOnce sync.Once
	closed             chan struct{}
}

// stdioBuffer is the size of one read from stdin. Two buffers let the next
// read of stdin overlap the write of the last one to the stream.
const stdioBuffer = 64 << 10

func newStdio(in io.Reader, out io.Writer) *stdio {
	s := &stdio{
		in:     in,
		out:    out,
		chunks: make(chan []byte),
		free:   make(chan []byte, 2),
		eof:    make(chan struct{}),
		closed: make(chan struct{}),
		rd:     pipeDeadline{passed: make(chan struct{})},
	}
	s.free <- make([]byte, stdioBuffer)
	s.free <- make([]byte, stdioBuffer)
	go s.readLoop()
	return s
}

func (s *stdio) readLoop() {
	for {
		var buf []byte
		select {
		case buf = <-s.free:
		case <-s.closed:
			return
		}
		n, err := s.in.Read(buf)
		if n > 0 {
			select {
			case s.chunks <- buf[:n]:
			case <-s.closed:
				return
			}
		} else {
			s.free <- buf
		}
		if err != nil {
			s.readErr = err
			close(s.eof)
			return
		}
	}
}

func (s *stdio) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(s.pending) == 0 {
		// chunks is unbuffered and the reader sends the last chunk before
		// closing eof, so no data is ever skipped for eof.
		select {
		case b := <-s.chunks:
			s.pending, s.reading = b, b
		case <-s.eof:
			return 0, s.readErr
		case <-s.rd.wait():
			return 0, os.ErrDeadlineExceeded
		case <-s.closed:
			return 0, net.ErrClosed
		}
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	if len(s.pending) == 0 {
		s.free <- s.reading[:cap(s.reading)]
		s.reading = nil
	}
	return n, nil
}

func (s *stdio) Write(p []byte) (int, error) {
	select {
	case <-s.closed:
		return 0, net.ErrClosed
	default:
	}
	return s.out.Write(p)
}

// CloseWrite closes stdout, when it can be closed, so that its reader sees
// EOF; stdin goes on being read.
func (s *stdio) CloseWrite() error {
	var err error
	s.outOnce.Do(func() {
		if c, ok := s.out.(io.Closer); ok {
			err = c.Close()
		}
	})
	return err
}

// Close ends both sides. stdin is closed when it can be, so that the
// reading goroutine ends with it (a test's pipe; os.Stdin's blocked read
// stays, and ends with the process).
func (s *stdio) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		if c, ok := s.in.(io.Closer); ok {
			c.Close()
		}
	})
	return s.CloseWrite()
}

func (s *stdio) LocalAddr() net.Addr  { return stdioAddr{} }
func (s *stdio) RemoteAddr() net.Addr { return stdioAddr{} }

func (s *stdio) SetDeadline(t time.Time) error {
	s.rd.set(t)
	return s.SetWriteDeadline(t)
}

func (s *stdio) SetReadDeadline(t time.Time) error {
	s.rd.set(t)
	return nil
}

// SetWriteDeadline is not supported: a write to stdout cannot be
// interrupted, and relay needs none.
func (s *stdio) SetWriteDeadline(time.Time) error { return os.ErrNoDeadline }

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdio" }

// pipeDeadline is a settable point in time whose channel is closed once it
// has passed, as net.Pipe keeps its deadlines.
type pipeDeadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	passed chan struct{}
}

func (d *pipeDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		// The timer fired: wait for its func to close passed, so that a
		// new channel below is not closed by the old timer.
		<-d.passed
	}
	d.timer = nil
	closed := d.hasPassed()
	if t.IsZero() {
		if closed {
			d.passed = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.passed = make(chan struct{})
		}
		ch := d.passed
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !closed {
		close(d.passed)
	}
}

func (d *pipeDeadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passed
}

// hasPassed reports whether passed is closed; the caller holds mu.
func (d *pipeDeadline) hasPassed() bool {
	select {
	case <-d.passed:
		return true
	default:
		return false
	}
}
