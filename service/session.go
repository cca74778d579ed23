package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tether-io/tether/internal/muxconn"
	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/wire"
)

// Sessions: one WebSocket to the hub carrying a yamux session, on which
// every stream of the client is a yamux stream (wire/mux.go). The client
// dials it on its first stream and keeps it; a hub without sessions, or
// one that cannot be reached on the session path right now, gets streams
// of their own WebSocket, as before.

// errUseStreams says a stream goes by a WebSocket of its own: the client
// has no session and is not to dial one now.
var errUseStreams = errors.New("service: no session for this stream")

// sessionDialTimeout bounds one session dial. It is detached from the
// caller's context: the dial serves every stream that waits for it, and
// one caller giving up must not fail the others.
const sessionDialTimeout = 15 * time.Second

// Back-off between session dials after one failed for another reason
// than a hub without sessions: a balancer's 503, a hub restarting, a
// network error. Streams go their own way meanwhile, so a failing session
// path costs each of them nothing, and the hub a dial every so often.
var (
	sessionRetryMin = time.Second
	sessionRetryMax = time.Minute
)

// userAgent is what the stream's POST says of its sender (net/http's own
// default, which the POST sends): the hub records it in the stream log.
const userAgent = "Go-http-client/1.1"

// sessions keeps the client's session with its hub.
type sessions struct {
	c *Client

	mu  sync.Mutex
	cur *session // the session new streams open on; nil when none
	// dialing is closed when the dial in flight ends; nil when none is.
	// Streams that need a session meanwhile wait for that one dial.
	dialing    chan struct{}
	cancelDial context.CancelFunc
	// none is set once the hub answered as a hub without sessions: every
	// stream goes its own way for the client's life.
	none bool
	// retryAt is when the next dial may be tried after a failed one;
	// backoff the wait after the next failure.
	retryAt time.Time
	backoff time.Duration
	wg      sync.WaitGroup // the dial goroutine
}

// session is one yamux session and the streams the client opened on it.
type session struct {
	ys *yamux.Session
	// open counts the streams not yet closed; retired is set once no new
	// stream may open on it (the client closed, or the hub sent GoAway).
	// A retired session closes with its last stream. Both guarded by
	// sessions.mu.
	open    int
	retired bool
}

// get returns the session to open a stream on, dialling it when there is
// none, or errUseStreams when the stream is to go its own way.
func (m *sessions) get(ctx context.Context) (*session, error) {
	for {
		m.mu.Lock()
		switch {
		case m.none:
			m.mu.Unlock()
			return nil, errUseStreams
		case m.cur != nil && !m.cur.ys.IsClosed():
			s := m.cur
			m.mu.Unlock()
			return s, nil
		case m.cur != nil:
			// Closed under us: the hub restarted, the network failed, the
			// keep-alive found it dead. The next dial replaces it.
			m.cur = nil
		}
		if m.dialing == nil {
			if time.Now().Before(m.retryAt) {
				m.mu.Unlock()
				return nil, errUseStreams
			}
			dctx, cancel := context.WithTimeout(context.Background(), sessionDialTimeout)
			m.dialing, m.cancelDial = make(chan struct{}), cancel
			m.wg.Add(1)
			go m.dial(dctx, cancel, m.dialing)
		}
		ch := m.dialing
		m.mu.Unlock()
		select {
		case <-ch:
			// Look again: the dial's outcome is in m.
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// dial opens a session and records the outcome for get, then closes done.
func (m *sessions) dial(ctx context.Context, cancel context.CancelFunc, done chan struct{}) {
	defer m.wg.Done()
	defer cancel()
	ys, err := m.dialSession(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	defer close(done)
	m.dialing, m.cancelDial = nil, nil
	switch {
	case err == nil:
		m.cur = &session{ys: ys}
		m.backoff = 0
		m.retryAt = time.Time{}
	case errors.Is(err, muxconn.ErrNoSession):
		m.none = true
	default:
		// A proxy's 5xx, 429 or 408, a hub out of reach, a refusal: say
		// nothing for good. Streams go their own way, which reports
		// whatever the hub itself says, until the back-off passes.
		m.backoff = min(max(2*m.backoff, sessionRetryMin), sessionRetryMax)
		m.retryAt = time.Now().Add(m.backoff)
	}
}

func (m *sessions) dialSession(ctx context.Context) (*yamux.Session, error) {
	tok, err := m.c.token()
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Authorization", tok)
	u := "ws" + strings.TrimPrefix(m.c.base, "http") + wire.PathMuxService
	return muxconn.Dial(ctx, u, h, m.c.tlsConf)
}

// retire takes s out of use: streams already open on it go on, new ones
// open on another session. It is closed once its last stream is.
func (m *sessions) retire(s *session) {
	m.mu.Lock()
	if m.cur == s {
		m.cur = nil
	}
	s.retired = true
	idle := s.open == 0
	m.mu.Unlock()
	if idle {
		s.ys.Close()
	}
}

// opened counts a stream on s, which it must release once.
func (m *sessions) opened(s *session) {
	m.mu.Lock()
	s.open++
	m.mu.Unlock()
}

func (m *sessions) release(s *session) {
	m.mu.Lock()
	s.open--
	last := s.retired && s.open == 0
	m.mu.Unlock()
	if last {
		s.ys.Close()
	}
}

// close stops a dial in flight, waits for it, and retires the session.
func (m *sessions) close() {
	m.mu.Lock()
	if m.cancelDial != nil {
		m.cancelDial()
	}
	m.mu.Unlock()
	m.wg.Wait()
	m.mu.Lock()
	s := m.cur
	m.mu.Unlock()
	if s != nil {
		m.retire(s)
	}
}

// sessionStream is a yamux stream whose Close releases it from its
// session's count, once.
type sessionStream struct {
	*yamux.Stream
	m    *sessions
	s    *session
	once sync.Once
}

func (st *sessionStream) Close() error {
	err := st.Stream.Close()
	st.once.Do(func() { st.m.release(st.s) })
	return err
}

// Reset resets the stream, as Close releases it.
func (st *sessionStream) Reset() error {
	err := st.Stream.Reset()
	st.once.Do(func() { st.m.release(st.s) })
	return err
}

// gone reports whether err, opening a stream on s, means the session went
// away: the stream may be opened on another.
func gone(s *yamux.Session, err error) bool {
	return s.IsClosed() || errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, yamux.ErrRemoteGoAway) ||
		errors.Is(err, yamux.ErrStreamsExhausted)
}

// startOnSession opens a stream on the client's session and writes its
// MuxOpen: the Stream's answer comes later (Stream.Accepted). A session
// that went away (the hub restarted, or sends GoAway while draining) is
// dropped and the stream tried once on a new one. It returns
// errUseStreams when the stream is to go its own way.
func (c *Client) startOnSession(ctx context.Context, deviceID, streamName string) (*Stream, error) {
	if c.opts.NoSessions || dial != nil {
		return nil, errUseStreams
	}
	hdr, err := wire.AppendMuxHeader(nil, wire.MuxOpen{
		DeviceID:          deviceID,
		Name:              streamName,
		ConnectTimeoutMs:  c.opts.ConnectTimeout.Milliseconds(),
		ResponseTimeoutMs: c.opts.ResponseTimeout.Milliseconds(),
		UserAgent:         userAgent,
	})
	if err != nil {
		return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, err)
	}
	for attempt := 0; ; attempt++ {
		s, err := c.mux.get(ctx)
		if err != nil {
			if errors.Is(err, errUseStreams) {
				return nil, err
			}
			return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, err)
		}
		// The header opens the stream: it leaves in the frame of the
		// stream's SYN, and the hub reads it as it accepts the stream.
		ys, err := s.ys.OpenStreamWith(hdr)
		if err == nil {
			c.mux.opened(s)
			st := &sessionStream{Stream: ys, m: &c.mux, s: s}
			return c.newSessionStream(st, len(hdr), deviceID, streamName), nil
		}
		if !gone(s.ys, err) {
			return nil, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, &hubError{addr: c.cs.Address(), err: err})
		}
		c.mux.retire(s)
		if attempt == 1 {
			return nil, errUseStreams
		}
	}
}

// answerError is the error of a stream the hub answered with a, nil when
// it was accepted: exactly what the POST's answer gives.
func answerError(a *wire.MuxAnswer) error {
	switch {
	case a.Status/100 == 2 && a.Accepted:
		return nil
	case a.Status/100 == 2:
		return rejectStatus(a.DeviceStatus)
	}
	h := http.Header{}
	if a.ErrorCode != "" {
		h.Set(wire.HeaderErrorCode, a.ErrorCode)
	}
	return newAPIError(a.Status, h, 0, a.Message)
}

// readAnswer reads the hub's answer to a session stream's MuxOpen and
// reports whether its session was lost before the answer, and the error
// the stream fails with, nil when it was accepted.
func (c *Client) readAnswer(st *sessionStream, deviceID, streamName string) (sessionLost bool, err error) {
	var a wire.MuxAnswer
	rerr := wire.ReadMuxHeader(st, &a)
	if rerr == nil {
		if aerr := answerError(&a); aerr != nil {
			return false, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, aerr)
		}
		return false, nil
	}
	switch {
	case errors.Is(rerr, os.ErrDeadlineExceeded) || isTimeout(rerr):
		return false, c.noAnswer(deviceID, streamName)
	case errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) || errors.Is(rerr, yamux.ErrConnectionReset):
		// A stream that crossed the hub's GoAway (a drain) is reset
		// unanswered, the GoAway ahead of it: the session is lost to it
		// as to a closed one.
		sessionLost = st.Session().IsClosed() || st.Session().RemoteGoneAway()
		rerr = fmt.Errorf("the hub ended the stream before answering: %w", rerr)
	}
	return sessionLost, fmt.Errorf("stream %q to device %q: %w", streamName, deviceID, &hubError{addr: c.cs.Address(), err: rerr})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
