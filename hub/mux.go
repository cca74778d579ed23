package hub

// Mux sessions (wire/mux.go, docs/protocol.md "Many streams on one
// connection"): one WebSocket from one of Tether's ends carrying a yamux
// session of many streams. A service's session carries the streams it
// asks for, each beginning with a MuxOpen and answered as the POST would
// be; a device's data session carries the streams the hub pushes to it
// (muxdevice.go). Named "mux sessions" here, since a session alone is a
// device's MQTT session in this package.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/internal/muxconn"
	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/wire"
)

// Kinds of mux session, as the metrics label them.
const (
	muxService = "service"
	muxDevice  = "device"
)

// muxSession is one end's session here.
type muxSession struct {
	kind   string
	remote string
	ys     *yamux.Session
	fc     *frameConn
	// ctx ends with the session: the stream requests it carries give up.
	ctx    context.Context
	cancel context.CancelFunc

	// A service's: the policy and the fingerprint of the key it signed
	// with, checked again for every stream.
	policy, key string

	// A device's: its client id and its credential (keys.go), as its MQTT
	// session keeps it.
	clientID, cred string

	closeOnce sync.Once
}

// close ends the session and every stream on it, with a close frame of
// code and reason on its WebSocket once what was written has gone.
func (m *muxSession) close(code ws.StatusCode, reason string) {
	m.closeOnce.Do(func() {
		m.cancel()
		m.fc.closeWith(ws.NewCloseFrameBody(code, reason))
		m.ys.Close() // closes fc, which flushes and says goodbye
	})
}

// muxSessions are the mux sessions of this node. Its lock is a leaf.
type muxSessions struct {
	mu       sync.Mutex
	closed   bool
	services map[*muxSession]struct{}
	devices  map[string]*muxSession // by client id
	// wg counts the goroutines serving sessions and their streams.
	wg sync.WaitGroup
	// setting counts the streams of services' sessions being set up: from
	// their acceptance to their answer, each on a goroutine of its own
	// (setupSlot).
	setting atomic.Int64
}

// muxRoutes adds the session routes to mux, unless sessions are off: the
// paths are then unknown (404), as on a hub without sessions, and Tether's
// ends use streams of their own.
func (s *Server) muxRoutes(mux *http.ServeMux) {
	s.muxes.services = make(map[*muxSession]struct{})
	s.muxes.devices = make(map[string]*muxSession)
	if s.opts.NoSessions {
		return
	}
	mux.HandleFunc("GET "+wire.PathMuxService, s.handleMuxService)
	mux.HandleFunc("GET "+wire.PathMuxDevices+"{id}", s.handleMuxDevice)
	mux.HandleFunc("GET "+wire.PathMuxDevices+"{id}/modules/{module}", s.handleMuxDevice)
}

// isMuxPath reports whether path is a session's.
func isMuxPath(path string) bool {
	return path == wire.PathMuxService || strings.HasPrefix(path, wire.PathMuxDevices)
}

// muxUpgradable checks that r is a WebSocket upgrade offering
// wire.SubprotocolMux, answering 400 when not.
func muxUpgradable(w http.ResponseWriter, r *http.Request) bool {
	if r.ProtoMajor != 1 || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "a session is a WebSocket upgrade")
		return false
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(p) == wire.SubprotocolMux {
				return true
			}
		}
	}
	writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "a session's upgrade must offer the subprotocol "+wire.SubprotocolMux)
	return false
}

// upgradeMux answers r with 101 selecting wire.SubprotocolMux and starts
// the hub's side of the yamux session on the connection.
func (s *Server) upgradeMux(w http.ResponseWriter, r *http.Request, kind string) (*muxSession, error) {
	up := ws.HTTPUpgrader{
		Timeout:  muxWriteTimeout,
		Protocol: func(p string) bool { return p == wire.SubprotocolMux },
	}
	conn, rw, _, err := up.Upgrade(r, w)
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	var br *bufio.Reader
	if rw != nil {
		br = rw.Reader
	}
	fc := newFrameConn(conn, br)
	ys, err := yamux.Server(fc, muxconn.Config())
	if err != nil {
		fc.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &muxSession{kind: kind, remote: r.RemoteAddr, ys: ys, fc: fc, ctx: ctx, cancel: cancel}, nil
}

// addMux registers m, or closes it when the hub is closing. A device's
// session takes the place of the one its client id had here, which is
// closed. It reports whether m was added; the caller then calls serveMux.
func (s *Server) addMux(m *muxSession) bool {
	s.muxes.mu.Lock()
	if s.muxes.closed {
		s.muxes.mu.Unlock()
		m.close(ws.StatusGoingAway, "hub shutting down")
		return false
	}
	var old *muxSession
	if m.kind == muxDevice {
		old = s.muxes.devices[m.clientID]
		s.muxes.devices[m.clientID] = m
	} else {
		s.muxes.services[m] = struct{}{}
	}
	s.muxes.wg.Add(1)
	s.muxes.mu.Unlock()
	s.metrics.muxOpened.WithLabelValues(m.kind).Inc()
	s.metrics.muxOpen.WithLabelValues(m.kind).Inc()
	if old != nil {
		s.log.Info("device data session replaced by a new one", "device", m.clientID, "remote", m.remote, "was", old.remote)
		old.close(ws.StatusPolicyViolation, "replaced by a newer session of the device")
	}
	if s.lame.draining.Load() {
		_ = m.ys.GoAway()
	}
	return true
}

// removeMux forgets m once it ended.
func (s *Server) removeMux(m *muxSession) {
	s.metrics.muxOpen.WithLabelValues(m.kind).Dec()
	s.muxes.mu.Lock()
	defer s.muxes.mu.Unlock()
	if m.kind == muxDevice {
		if s.muxes.devices[m.clientID] == m {
			delete(s.muxes.devices, m.clientID)
		}
		return
	}
	delete(s.muxes.services, m)
}

// muxWhere returns the sessions for which match is true.
func (s *Server) muxWhere(match func(*muxSession) bool) []*muxSession {
	s.muxes.mu.Lock()
	defer s.muxes.mu.Unlock()
	var out []*muxSession
	for m := range s.muxes.services {
		if match(m) {
			out = append(out, m)
		}
	}
	for _, m := range s.muxes.devices {
		if match(m) {
			out = append(out, m)
		}
	}
	return out
}

// closeMuxes closes every session, for Close, and waits until their
// goroutines returned.
func (s *Server) closeMuxes() {
	s.muxes.mu.Lock()
	s.muxes.closed = true
	s.muxes.mu.Unlock()
	for _, m := range s.muxWhere(func(*muxSession) bool { return true }) {
		m.close(ws.StatusGoingAway, "hub shutting down")
	}
	s.muxes.wg.Wait()
}

// goAwayMuxes tells every session that no new stream opens on it, for the
// drain: the ends open their next streams elsewhere, and the streams open
// run on.
func (s *Server) goAwayMuxes() int {
	all := s.muxWhere(func(*muxSession) bool { return true })
	for _, m := range all {
		_ = m.ys.GoAway()
	}
	return len(all)
}

// serveMux runs until m ends: it accepts the streams the end opens and
// serves each with serve on a goroutine of its own. addMux counted it.
func (s *Server) serveMux(m *muxSession, serve func(*muxSession, *yamux.Stream, func())) {
	defer s.muxes.wg.Done()
	defer s.removeMux(m)
	defer m.close(ws.StatusNormalClosure, "")
	for {
		st, err := m.ys.AcceptStream()
		if err != nil {
			return
		}
		release, ok := s.setupSlot(m)
		if !ok {
			s.refuseSetup(m, st)
			continue
		}
		// serve gives the slot back once the stream is answered (it may
		// then run the stream on this goroutine), or when it returns.
		if !s.muxGo(func() { defer release(); serve(m, st, release) }) {
			release()
			st.Reset()
			return
		}
	}
}

// setupSlot takes one of the node's slots for a service's stream being
// set up, unless all PendingHandshakes are taken. A stream costs a
// goroutine from its acceptance on, before its header says anything, and
// a session can open streams as fast as it writes their frames: without
// the cap, one service could hold a goroutine per stream for the header's
// timeout, without bound. A device's session takes no slot: the hub
// resets the streams a device opens at once.
func (s *Server) setupSlot(m *muxSession) (release func(), ok bool) {
	limit := int64(s.lim.l.PendingHandshakes)
	if m.kind != muxService || limit <= 0 {
		return func() {}, true
	}
	if s.muxes.setting.Add(1) > limit {
		s.muxes.setting.Add(-1)
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { s.muxes.setting.Add(-1) }) }, true
}

// refuseSetup answers a stream over setupSlot's cap as the relay answers
// one over its own, 429, without reading its header: written on the
// session's accepting goroutine, so that a service that opens streams
// faster than it reads their answers slows only its own session.
func (s *Server) refuseSetup(m *muxSession, st *yamux.Stream) {
	s.lim.hit(relay.LimitPendingHandshakes, "stream request refused: too many streams on sessions being set up on this hub", "remote", m.remote, "policy", m.policy)
	a := &muxAnswer{s: s, conn: st, gate: newWriteGate(st)}
	a.throttled(time.Second, fmt.Sprintf("Too many streams being set up on this hub (at most %d)", s.lim.l.PendingHandshakes))
}

// muxGo runs f on a goroutine of its own, which closeMuxes waits for,
// unless the hub is closing; it reports whether f runs.
func (s *Server) muxGo(f func()) bool {
	s.muxes.mu.Lock()
	defer s.muxes.mu.Unlock()
	if s.muxes.closed {
		return false
	}
	s.muxes.wg.Add(1)
	go func() {
		defer s.muxes.wg.Done()
		f()
	}()
	return true
}

// handleMuxService serves GET wire.PathMuxService: a service's session,
// authenticated as a stream request is (ServiceConnect).
func (s *Server) handleMuxService(w http.ResponseWriter, r *http.Request) {
	if !muxUpgradable(w, r) {
		return
	}
	epoch := s.keys.epoch.Load() // before the policy is read (keys.go)
	policy, err := s.authService(r, registry.ServiceConnect)
	if err != nil {
		unauthorized(w)
		return
	}
	key := requestKey(r.Header, policy)
	m, err := s.upgradeMux(w, r, muxService)
	if err != nil {
		s.log.Debug("session upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	m.policy, m.key = policy.Name, key
	if !s.addMux(m) {
		return
	}
	// A change of the policy between its reading and the session's
	// registering found nothing to end here: check again.
	if epoch != s.keys.epoch.Load() && !s.muxKeyValid(m) {
		m.close(ws.StatusPolicyViolation, "the key that opened the session was withdrawn")
	}
	s.log.Debug("service session opened", "policy", m.policy, "remote", m.remote)
	s.serveMux(m, s.serveServiceStream)
}

// muxKeyValid reads the policy of a service's session again and reports
// whether its key still grants ServiceConnect.
func (s *Server) muxKeyValid(m *muxSession) bool {
	ctx, cancel := ctxTimeout(m.ctx)
	defer cancel()
	p, err := s.reg.Policy(ctx, m.policy)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return false
	case err != nil:
		s.log.Warn("checking a session's key again", "policy", m.policy, "err", err)
		return false
	}
	return !policyStale(m.policy, m.key, &p, registry.ServiceConnect)
}

// headerTimeout bounds the wait for a session stream's header.
func (s *Server) headerTimeout() time.Duration {
	if d := s.lim.l.HeaderTimeout; d > 0 {
		return d
	}
	return 10 * time.Second
}

// serveServiceStream serves one stream a service opened: its MuxOpen is
// a stream request, checked and asked as the POST's, and answered with a
// MuxAnswer; the stream is then the service's side of the stream. A
// malformed header resets this stream alone.
func (s *Server) serveServiceStream(m *muxSession, st *yamux.Stream, setupDone func()) {
	s.metrics.muxStreams.WithLabelValues(muxService).Inc()
	st.SetReadDeadline(time.Now().Add(s.headerTimeout()))
	var open wire.MuxOpen
	if err := wire.ReadMuxHeader(st, &open); err != nil {
		s.log.Debug("session stream without a header", "remote", m.remote, "err", err)
		st.Reset()
		return
	}
	st.SetReadDeadline(time.Time{})
	a := &muxAnswer{s: s, conn: st, gate: newWriteGate(st), setupDone: setupDone}
	start := time.Now()
	// The rates are checked first, in memory: a throttled request reads
	// nothing from the registry.
	if !s.allowStream(a, m.remote, m.policy) {
		return // 429, not a stream invocation: no stream-log record
	}
	// The policy is read for every stream, as for a POST: a key withdrawn
	// through another node is in the registry before that node answers,
	// but reaches this node's watch (keys.go) only later, and a stream
	// asked in between must be refused all the same. The device's record,
	// which createStream reads for the same reason, is read meanwhile.
	var devStatus *statusRead
	pathErr := validStreamPath(open.DeviceID, open.ModuleID, open.Name)
	if pathErr == nil {
		devStatus = s.readStatus(m.ctx, open.DeviceID)
	}
	epoch := s.keys.epoch.Load() // before the policy is read (keys.go)
	if !s.muxKeyValid(m) {
		a.fail(http.StatusUnauthorized, wire.CodeUnauthorized, "Unauthorized")
		m.close(ws.StatusPolicyViolation, "the key that opened the session was withdrawn")
		return
	}
	inv := &invocation{
		deviceID: open.DeviceID, module: open.ModuleID, name: open.Name,
		policy: m.policy, start: start, sdk: open.UserAgent, remote: m.remote,
		key: m.key, epoch: epoch, devStatus: devStatus,
	}
	a.gate.inv = inv
	if pathErr != nil {
		a.fail(http.StatusBadRequest, wire.CodeBadRequest, pathErr.Error())
		return
	}
	window, err := muxTimeout("connectTimeoutMs", open.ConnectTimeoutMs, s.opts.Window, s.opts.MaxWindow)
	var respTimeout time.Duration
	if err == nil {
		respTimeout, err = muxTimeout("responseTimeoutMs", open.ResponseTimeoutMs, window, s.opts.MaxWindow)
	}
	if err != nil {
		a.fail(http.StatusBadRequest, wire.CodeBadRequest, err.Error())
		return
	}
	s.createStream(m.ctx, a, inv, window, respTimeout)
}

// muxTimeout is a MuxOpen's timeout, as timeoutHeader reads the POST's:
// 0 is def, and more than max is max.
func muxTimeout(name string, ms int64, def, max time.Duration) (time.Duration, error) {
	switch {
	case ms == 0:
		return def, nil
	case ms < 0:
		return 0, fmt.Errorf("%s: %d is not a positive number of milliseconds", name, ms)
	case ms > max.Milliseconds():
		return max, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// muxAnswer answers a stream request on a service's session stream.
type muxAnswer struct {
	s    *Server
	conn net.Conn
	// gate is conn as the relay has it when the stream was pushed to the
	// device with its early data (muxearly.go).
	gate *writeGate
	// setupDone, when set, is called as the answer is given: the stream's
	// setup is over (setupSlot).
	setupDone func()
}

func (a *muxAnswer) setupOver() {
	if a.setupDone != nil {
		a.setupDone()
	}
}

// end writes ans and ends the stream: nothing of it reached a device's
// accepted stream.
func (a *muxAnswer) end(ans wire.MuxAnswer) {
	a.setupOver()
	a.gate.answered()
	a.gate.decide(gateRefused)
	a.conn.SetWriteDeadline(time.Now().Add(muxWriteTimeout))
	_ = wire.WriteMuxHeader(a.conn, ans)
	a.conn.Close()
}

func (a *muxAnswer) fail(status, code int, msg string) {
	a.end(wire.MuxAnswer{Status: status, ErrorCode: wire.CodeName(code), Message: msg})
}

func (a *muxAnswer) throttled(_ time.Duration, msg string) {
	a.fail(http.StatusTooManyRequests, wire.CodeThrottled, msg)
}

func (a *muxAnswer) rejected(deviceStatus int) {
	a.end(wire.MuxAnswer{Status: http.StatusOK, DeviceStatus: deviceStatus})
}

// accepted answers the device's yes and makes the session stream the
// service's side of st; with the device's side waiting, this goroutine
// runs the stream until it ends.
func (a *muxAnswer) accepted(st *relay.Stream, _ string) {
	a.setupOver()
	if a.gate.used.Load() {
		// The relay has the stream, and answered the service as it read
		// the device's acceptance (writeGate.acceptEarly).
		return
	}
	a.gate.answered()
	a.conn.SetWriteDeadline(time.Now().Add(muxWriteTimeout))
	err := wire.WriteMuxHeader(a.conn, wire.MuxAnswer{Status: http.StatusOK, Accepted: true, StreamID: st.ID})
	if err != nil {
		a.s.relay.Cancel(st.ID)
		a.conn.Close()
		return
	}
	a.conn.SetWriteDeadline(time.Time{})
	if err := a.s.relay.Attach(st.ID, relay.SideService, a.conn, true); err != nil {
		// Ended in the meantime (killed, the window over, the hub closing).
		a.conn.Close()
	}
}
