package device

// The device's data session (docs/protocol.md, "Many streams on one
// connection"; wire/mux.go): one WebSocket to the hub carrying a yamux
// session, on which the hub opens the device's streams itself, with no
// MQTT message, no token and no TLS handshake per stream.
//
// It is opened lazily: the first stream request the hub marks with
// $tmux=1 is answered over MQTT and joins its URL as before, while the
// session is dialed beside it for the streams after it. It is closed after
// SessionIdle without a stream, so that an idle device holds only its
// control channel, and with the control channel, which the hub ties it
// to. A hub without sessions is asked once in the client's life.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/tether-io/tether/internal/muxconn"
	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/wire"
)

const (
	// SessionIdle is how long the device keeps a data session no stream
	// uses. The hub keeps one for 90 s, so it never closes a session the
	// device is about to use; 30 s spares a device that serves bursts of
	// streams a dial per burst, and frees an idle one soon.
	SessionIdle = 30 * time.Second
	// muxHeaderTimeout bounds reading a pushed stream's header, which the
	// hub writes as it opens the stream.
	muxHeaderTimeout = 10 * time.Second
	// rejectQueuedTimeout bounds each reject Close writes for a request
	// nobody will accept.
	rejectQueuedTimeout = time.Second
)

// errMalformedRequest is a session stream whose header is not a stream
// request the device can serve.
var errMalformedRequest = errors.New("device: malformed stream request on the session")

// muxState is a client's data session, or what it knows of the hub's
// sessions. Its fields are guarded by mu.
type muxState struct {
	mu       sync.Mutex
	cur      *muxSession // the open session; nil when none
	dialing  bool        // one dial at a time
	none     bool        // the hub has no sessions: never ask again
	failures int         // dials failed in a row, for the backoff
	retryAt  time.Time   // no dial before this, after a failure
	dials    int         // dials started, for tests
}

// muxSession is one open data session.
type muxSession struct {
	c  *Client
	ys *yamux.Session

	mu      sync.Mutex
	open    int       // streams accepted from the hub and not yet ended
	lastEnd time.Time // when open last fell to 0 (or the session opened)
	idle    *time.Timer
}

// sessionTarget is where the data session of a control channel to c.addr
// goes, as a URL and as host:port: the HTTPS address of the same hub node,
// since the hub ties a device's session to its control channel.
func (c *Client) sessionTarget() (muxURL, hostport string) {
	hostport = c.cs.Address()
	switch {
	case c.transport == WebSocket:
		if u, err := url.Parse(c.addr); err == nil && u.Host != "" {
			hostport = u.Host
		}
	case len(c.hubs) > 0:
		// MQTT over TLS to one node of Options.Hubs: that node's HTTPS
		// port is the connection string's.
		host, _, err := net.SplitHostPort(c.addr)
		_, port, perr := net.SplitHostPort(c.cs.Address())
		if err == nil && perr == nil {
			hostport = net.JoinHostPort(host, port)
		}
	}
	return "wss://" + hostport + wire.MuxDevicePath(c.cs.DeviceID, c.cs.ModuleID), hostport
}

// wantSession starts a dial of the data session for control channel s,
// unless sessions are off, one is open or being dialed, the hub has none,
// or the last dial failed too recently. It runs on the reader of s and
// does not block.
func (c *Client) wantSession(s *session) {
	if c.noSessions {
		return
	}
	m := &c.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.none || m.cur != nil || m.dialing || time.Now().Before(m.retryAt) || c.ctx.Err() != nil || s.isLost() {
		return
	}
	m.dialing = true
	m.dials++
	c.wg.Add(1)
	go c.dialSession(s)
}

// dialSession dials the data session of control channel s and installs
// it, unless s was lost or the client closed meanwhile.
func (c *Client) dialSession(s *session) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.ctx, connectTimeout)
	defer cancel()
	ys, err := c.dialMux(ctx, s)
	if !c.installSession(s, ys, err) && ys != nil {
		// Closing waits for the close frame: not under mux.mu, which the
		// control channel's reader takes.
		ys.Close()
	}
}

// installSession records how the dial of s's session went, and makes ys
// the client's session if s and the client are still up; it reports
// whether it did.
func (c *Client) installSession(s *session, ys *yamux.Session, err error) bool {
	m := &c.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dialing = false
	switch {
	case err == nil && (c.ctx.Err() != nil || s.isLost()):
		return false
	case err == nil:
		m.failures, m.retryAt = 0, time.Time{}
		ms := &muxSession{c: c, ys: ys, lastEnd: time.Now()}
		ms.idle = time.AfterFunc(c.sessionIdle, ms.idleCheck)
		m.cur = ms
		c.log.Debug("session open", "addr", s.muxAddr)
		c.wg.Add(1)
		go ms.serve()
		return true
	case c.ctx.Err() != nil:
	case errors.Is(err, muxconn.ErrNoSession):
		m.none = true
		c.log.Info("the hub does not offer sessions: every stream joins its own connection", "addr", s.muxAddr)
	default:
		d := backoff(m.failures, c.minB, c.maxB, rand.Int64N)
		m.failures++
		m.retryAt = time.Now().Add(d)
		c.log.Warn("cannot open a session: streams join their own connections meanwhile", "addr", s.muxAddr,
			"err", err, "retry_after", d.Round(time.Millisecond))
	}
	return false
}

// dialMux opens the session with the device's credentials: a SAS token
// signed now, as each MQTT connection's, or the client certificate of the
// control channel's TLS configuration.
func (c *Client) dialMux(ctx context.Context, s *session) (*yamux.Session, error) {
	h := http.Header{}
	if !c.cs.X509 {
		tok, err := c.cs.Token(tokenTTL)
		if err != nil {
			return nil, fmt.Errorf("device: signing a token: %w", err)
		}
		h.Set("Authorization", tok)
	}
	return muxconn.Dial(ctx, s.muxURL, h, s.muxTLS)
}

// closeMux closes the data session, if one is open.
func (c *Client) closeMux() {
	m := &c.mux
	m.mu.Lock()
	ms := m.cur
	m.cur = nil
	m.mu.Unlock()
	if ms != nil {
		ms.ys.Close()
	}
}

// serve accepts the streams the hub opens until the session ends, then
// forgets the session, so that the next stream request dials a new one.
func (ms *muxSession) serve() {
	c := ms.c
	defer c.wg.Done()
	for {
		st, err := ms.ys.AcceptStream()
		if err != nil {
			break
		}
		ms.begin()
		c.wg.Add(1)
		go ms.serveStream(st)
	}
	ms.idle.Stop()
	ms.ys.Close()
	c.mux.mu.Lock()
	if c.mux.cur == ms {
		c.mux.cur = nil
	}
	c.mux.mu.Unlock()
	c.log.Debug("session closed")
}

// serveStream reads a pushed stream's request and queues it for Accept.
// Nothing past the header is read: what follows is the service's early
// data, the accepted stream's to read, or nobody's after a reject.
func (ms *muxSession) serveStream(st *yamux.Stream) {
	c := ms.c
	defer c.wg.Done()
	ps := &pushedStream{Stream: st, end: ms.end}
	mr, err := readMuxRequest(st)
	if err != nil {
		// Only this stream is broken; the session goes on.
		c.log.Warn("dropping a malformed stream request on the session", "err", err)
		ps.Reset()
		return
	}
	r := &Request{Name: mr.Name, RID: mr.RID, StreamID: mr.StreamID, c: c, pushed: ps}
	select {
	case c.requests <- r:
		c.log.Debug("stream request on the session", "name", r.Name, "rid", r.RID)
		return
	default:
	}
	c.log.Warn("too many stream requests waiting for Accept; rejecting", "name", r.Name, "rid", r.RID)
	r.answered.Store(true)
	ps.answer(context.Background(), wire.AnswerBusy, answerTimeout)
}

// readMuxRequest reads and checks a pushed stream's header, within
// muxHeaderTimeout.
func readMuxRequest(st *yamux.Stream) (wire.MuxRequest, error) {
	var mr wire.MuxRequest
	st.SetReadDeadline(time.Now().Add(muxHeaderTimeout))
	defer st.SetReadDeadline(time.Time{})
	if err := wire.ReadMuxHeader(st, &mr); err != nil {
		return mr, fmt.Errorf("%w: %w", errMalformedRequest, err)
	}
	if err := wire.ValidateStreamName(mr.Name); err != nil {
		return mr, fmt.Errorf("%w: %w", errMalformedRequest, err)
	}
	if mr.RID == "" {
		return mr, fmt.Errorf("%w: no rid", errMalformedRequest)
	}
	return mr, nil
}

// begin counts a stream the hub opened.
func (ms *muxSession) begin() {
	ms.mu.Lock()
	ms.open++
	ms.mu.Unlock()
}

// end counts a stream ended, and starts the idle wait after the last one.
func (ms *muxSession) end() {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.open--
	if ms.open == 0 {
		ms.lastEnd = time.Now()
		ms.idle.Reset(ms.c.sessionIdle)
	}
}

// idleCheck closes the session once it went SessionIdle without a stream.
// A firing that a stream's end overtook finds the wait restarted and does
// nothing.
func (ms *muxSession) idleCheck() {
	ms.mu.Lock()
	idle := ms.open == 0 && time.Since(ms.lastEnd) >= ms.c.sessionIdle
	ms.mu.Unlock()
	if !idle {
		return
	}
	m := &ms.c.mux
	m.mu.Lock()
	if m.cur == ms {
		m.cur = nil
	}
	m.mu.Unlock()
	ms.c.log.Debug("closing the idle session")
	ms.ys.Close()
}

// pushedStream is a stream the hub opened on the session. Its end, once,
// is when it was rejected or, after an accept, when its Conn closed it.
type pushedStream struct {
	*yamux.Stream
	once sync.Once
	end  func()
}

// Close closes the stream with FIN, so that the hub reads an answer
// written before it, and counts it ended.
func (p *pushedStream) Close() error {
	err := p.Stream.Close()
	p.once.Do(p.end)
	return err
}

// Reset resets the stream, dropping whatever the hub sent on it, and
// counts it ended.
func (p *pushedStream) Reset() error {
	err := p.Stream.Reset()
	p.once.Do(p.end)
	return err
}

// answer writes the device's answer to the hub, and closes the stream
// unless it accepted. ctx and timeout bound the write.
func (p *pushedStream) answer(ctx context.Context, status int, timeout time.Duration) error {
	dl := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	p.SetWriteDeadline(dl)
	stop := context.AfterFunc(ctx, func() { p.SetWriteDeadline(time.Unix(1, 0)) })
	err := wire.WriteMuxHeader(p.Stream, wire.MuxAnswer{Status: status})
	stop()
	p.SetWriteDeadline(time.Time{})
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil || status != wire.AnswerAccept {
		p.Close()
	}
	return err
}

// acceptPushed answers 200 on the session and returns the stream as a
// Conn, its frames and ends those of a stream's own WebSocket.
func (r *Request) acceptPushed(ctx context.Context) (net.Conn, error) {
	if r.c.ctx.Err() != nil {
		r.pushed.Close()
		return nil, fmt.Errorf("device: accepting stream %q (rid %s): %w", r.Name, r.RID, ErrClosed)
	}
	if err := r.pushed.answer(ctx, wire.AnswerAccept, answerTimeout); err != nil {
		return nil, fmt.Errorf("device: accepting stream %q (rid %s) on the session: %w", r.Name, r.RID, err)
	}
	return wsconn.OnSession(r.pushed), nil
}

// rejectPushed answers status on the session and closes the stream,
// whatever the hub sent behind its header unread.
func (r *Request) rejectPushed(status int) error {
	if r.c.ctx.Err() != nil {
		r.pushed.Close()
		return fmt.Errorf("device: rejecting stream %q (rid %s): %w", r.Name, r.RID, ErrClosed)
	}
	if err := r.pushed.answer(context.Background(), status, answerTimeout); err != nil {
		return fmt.Errorf("device: rejecting stream %q (rid %s) on the session: %w", r.Name, r.RID, err)
	}
	return nil
}
