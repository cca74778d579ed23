package devicetest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tether-io/tether/internal/muxconn"
	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// The hub's half of a device's data session (wire/mux.go), written from
// the protocol's text and not from the hub's code: a WebSocket at
// wire.MuxDevicePath, authenticated by the device's SAS token, selecting
// wire.SubprotocolMux, whose binary messages carry a yamux session on
// which the test opens the device's streams.

// sessionState is what the hub does with a session upgrade; guarded by
// Hub.smu.
type sessionState struct {
	status int // 0: take sessions; else the HTTP status to refuse them with
	open   map[*Session]struct{}
	dials  int
}

// OfferSessions makes the hub take device sessions. A new hub answers
// their upgrade 404, as a hub without sessions.
func (h *Hub) OfferSessions() { h.RefuseSessions(0) }

// RefuseSessions makes the hub answer a session's upgrade with status:
// 404 as a hub without sessions, 503 as one failing; 0 takes them.
func (h *Hub) RefuseSessions(status int) {
	h.smu.Lock()
	h.sess.status = status
	h.smu.Unlock()
}

// SessionDials is how many session upgrades the hub was asked for.
func (h *Hub) SessionDials() int {
	h.smu.Lock()
	defer h.smu.Unlock()
	return h.sess.dials
}

// NextSession waits for the next session a device opened.
func (h *Hub) NextSession() *Session {
	h.t.Helper()
	select {
	case s := <-h.Sessions:
		return s
	case <-time.After(Timeout):
		h.t.Fatal("no session opened")
		return nil
	}
}

// Session is a device's data session, the hub's end (yamux's server).
type Session struct {
	*yamux.Session
	DeviceID, ModuleID string
}

func (h *Hub) serveMux(w http.ResponseWriter, r *http.Request) {
	h.handlers.Add(1)
	defer h.handlers.Done()
	h.smu.Lock()
	h.sess.dials++
	status := h.sess.status
	if h.sess.open == nil {
		status = http.StatusServiceUnavailable // stopping
	}
	h.smu.Unlock()
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	dev, mod, ok := parseMuxPath(r.URL.EscapedPath())
	if !ok {
		http.NotFound(w, r)
		return
	}
	resource := "/devices/" + dev
	if mod != "" {
		resource += "/modules/" + mod
	}
	tok, err := sas.ParseToken(r.Header.Get("Authorization"))
	if err != nil || tok.Verify(h.Key, time.Now()) != nil || !tok.ResourceIs([]string{"127.0.0.1"}, resource) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.SubprotocolMux}})
	if err != nil {
		return
	}
	if c.Subprotocol() != wire.SubprotocolMux {
		c.Close(websocket.StatusPolicyViolation, wire.SubprotocolMux+" required")
		return
	}
	c.SetReadLimit(-1) // yamux's frames are bounded by its windows
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc := websocket.NetConn(ctx, c, websocket.MessageBinary)
	ys, err := yamux.Server(nc, muxconn.Config())
	if err != nil {
		nc.Close()
		return
	}
	s := &Session{Session: ys, DeviceID: dev, ModuleID: mod}
	h.smu.Lock()
	if h.sess.open == nil {
		h.smu.Unlock()
		ys.Close()
		return
	}
	h.sess.open[s] = struct{}{}
	h.smu.Unlock()
	select {
	case h.Sessions <- s:
	default: // nobody waits for it: the device still has its session
	}
	<-ys.CloseChan()
	h.smu.Lock()
	delete(h.sess.open, s)
	h.smu.Unlock()
}

// closeSessions closes every open session and refuses new ones, for Stop.
func (h *Hub) closeSessions() {
	h.smu.Lock()
	open := h.sess.open
	h.sess.open = nil
	h.smu.Unlock()
	for s := range open {
		s.Close()
	}
}

// parseMuxPath splits a session path into its device and module.
func parseMuxPath(escaped string) (dev, mod string, ok bool) {
	rest, ok := strings.CutPrefix(escaped, wire.PathMuxDevices)
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 1:
	case len(parts) == 3 && parts[1] == "modules":
		if mod, err := url.PathUnescape(parts[2]); err == nil && mod != "" {
			return unescapeDev(parts[0], mod)
		}
		return "", "", false
	default:
		return "", "", false
	}
	return unescapeDev(parts[0], "")
}

func unescapeDev(escaped, mod string) (string, string, bool) {
	dev, err := url.PathUnescape(escaped)
	return dev, mod, err == nil && dev != ""
}

// Push opens a stream on the session and writes its request header and,
// in the same write, early: the service's first frames (Frame makes
// them).
func (s *Session) Push(req wire.MuxRequest, early ...byte) (*PushedStream, error) {
	st, err := s.OpenStream()
	if err != nil {
		return nil, err
	}
	b, err := wire.AppendMuxHeader(nil, req)
	if err != nil {
		st.Close()
		return nil, err
	}
	st.SetWriteDeadline(time.Now().Add(Timeout))
	if _, err := st.Write(append(b, early...)); err != nil {
		st.Close()
		return nil, err
	}
	return &PushedStream{Stream: st}, nil
}

// Frame is p as the hub's relay sends it on a stream: one unmasked
// binary frame.
func Frame(p []byte) []byte {
	f := ws.NewBinaryFrame(p)
	b, err := ws.CompileFrame(f)
	if err != nil {
		panic(err)
	}
	return b
}

// PushedStream is the hub's end of a stream it opened on a session.
type PushedStream struct {
	*yamux.Stream
}

// Answer reads the device's answer.
func (p *PushedStream) Answer() (wire.MuxAnswer, error) {
	var a wire.MuxAnswer
	p.SetReadDeadline(time.Now().Add(Timeout))
	defer p.SetReadDeadline(time.Time{})
	err := wire.ReadMuxHeader(p.Stream, &a)
	return a, err
}

// Send sends p to the device as one binary frame.
func (p *PushedStream) Send(b []byte) error {
	p.SetWriteDeadline(time.Now().Add(Timeout))
	return wsutil.WriteServerBinary(p.Stream, b)
}

// Recv returns the device's next data message; io.EOF once it closed the
// stream (a close frame, or the stream's end).
func (p *PushedStream) Recv() ([]byte, error) {
	p.SetReadDeadline(time.Now().Add(Timeout))
	msg, _, err := wsutil.ReadClientData(p.Stream)
	var closed wsutil.ClosedError
	if err != nil && (errors.Is(err, io.EOF) || errors.As(err, &closed)) {
		return nil, io.EOF
	}
	return msg, err
}

// RecvEOF reads the stream to its end without any frame parsing: nil
// once the device closed it, with what it read, a timeout otherwise.
func (p *PushedStream) RecvEOF() ([]byte, error) {
	p.SetReadDeadline(time.Now().Add(Timeout))
	return io.ReadAll(p.Stream)
}
