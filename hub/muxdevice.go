package hub

// A device's data session: a mux session the device opens (lazily, told
// by a stream request's wire.PropertyMux) on which the hub pushes the
// device's next streams, a MuxRequest and the device's MuxAnswer each,
// with no MQTT message and no token.

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/wire"
)

// handleMuxDevice serves GET wire.MuxDevicePath: a device's data session,
// authenticated as its MQTT CONNECT is: its SAS token in Authorization
// (the MQTT password), or its TLS client certificate.
func (s *Server) handleMuxDevice(w http.ResponseWriter, r *http.Request) {
	if !muxUpgradable(w, r) {
		return
	}
	deviceID, module := r.PathValue("id"), r.PathValue("module")
	if err := registry.ValidateID(deviceID); err != nil {
		s.badRequest(w, r, err)
		return
	}
	clientID := deviceID
	if module != "" {
		if err := registry.ValidateModuleID(module); err != nil {
			s.badRequest(w, r, err)
			return
		}
		clientID += "/" + module
	}
	if msg, wait := s.lim.refuseLogin(deviceIdentity(clientID), r.RemoteAddr); msg != "" {
		writeThrottled(w, wait, msg)
		return
	}
	var certs []*x509.Certificate
	if r.TLS != nil {
		certs = r.TLS.PeerCertificates
	}
	// The username the device's MQTT CONNECT would carry: only its client
	// id part is checked.
	username := hostOnly(r.Host) + "/" + clientID + "/?api-version=" + wire.APIVersion
	cred, err := s.authenticateDevice(clientID, username, []byte(r.Header.Get("Authorization")), r.RemoteAddr, certs)
	if err != nil {
		// As MQTT's CONNACK, whatever failed: unknown, disabled, bad token.
		unauthorized(w)
		return
	}
	m, err := s.upgradeMux(w, r, muxDevice)
	if err != nil {
		s.log.Debug("session upgrade failed", "device", clientID, "remote", r.RemoteAddr, "err", err)
		return
	}
	m.clientID, m.cred = clientID, cred
	if !s.addMux(m) {
		return
	}
	s.recheckDataSession(m)
	s.log.Debug("device data session opened", "device", clientID, "remote", m.remote)
	s.serveMux(m, func(m *muxSession, st *yamux.Stream, _ func()) {
		// A device's session carries the streams the hub opens only.
		st.Reset()
	})
}

// recheckDataSession checks m's credential again, in the background, if
// the registry changed since it was checked: the change found nothing
// here to end (as recheckSession for MQTT).
func (s *Server) recheckDataSession(m *muxSession) {
	c := parseCredential(m.cred)
	if c.epoch == s.keys.epoch.Load() {
		return
	}
	s.muxGo(func() {
		deviceID, _, _ := strings.Cut(m.clientID, "/")
		ctx, cancel := ctxTimeout(m.ctx)
		defer cancel()
		stale, err := s.sessionStale(ctx, deviceID, c)
		if err != nil {
			s.log.Warn("checking a data session's credential again; closing it", "device", m.clientID, "err", err)
			stale = true
		}
		if stale {
			m.close(ws.StatusPolicyViolation, "the credential that opened the session was withdrawn")
		}
	})
}

// dataSession is clientID's data session here, or nil.
func (s *Server) dataSession(clientID string) *muxSession {
	s.muxes.mu.Lock()
	defer s.muxes.mu.Unlock()
	return s.muxes.devices[clientID]
}

// dataSessionsOf lists the data sessions of deviceID and its modules (all:
// an empty deviceID matches none) for which match holds.
func (s *Server) dataSessionsOf(deviceID string, match func(*muxSession) bool) []*muxSession {
	return s.muxWhere(func(m *muxSession) bool {
		return m.kind == muxDevice && (m.clientID == deviceID || strings.HasPrefix(m.clientID, deviceID+"/")) && match(m)
	})
}

// dropDataSessions takes the data sessions of deviceID and its modules here
// out of use at once, for a device this node disabled or deleted, rather
// than waiting for the change's kick to close them.
func (s *Server) dropDataSessions(deviceID string) {
	for _, m := range s.dataSessionsOf(deviceID, func(*muxSession) bool { return true }) {
		m.cancel()
		s.muxGo(func() { m.close(ws.StatusPolicyViolation, "device disabled or deleted") })
	}
}

// closeDataSessions closes the data sessions of deviceID and its modules
// for which match holds (dataSessionsOf), and returns how many. Closing waits for the last flush, so callers that hold
// a lock close on a goroutine.
func (s *Server) closeDataSessions(deviceID string, match func(*muxSession) bool, reason string) int {
	list := s.dataSessionsOf(deviceID, match)
	for _, m := range list {
		m.close(ws.StatusPolicyViolation, reason)
	}
	return len(list)
}

// dataSessionEnded closes clientID's data session once its MQTT session
// here ended: its control channel is elsewhere or gone. While the node
// drains, the session stays for the streams on it (no new one opens: it
// was told to go away). Called under s.mu: the close runs apart.
func (s *Server) dataSessionEnded(clientID string) {
	if s.lame.draining.Load() {
		return
	}
	m := s.dataSession(clientID)
	if m == nil {
		return
	}
	s.muxGo(func() { m.close(ws.StatusGoingAway, "the device's connection ended") })
}

// muxKeysChangedDevice closes the data sessions of device id whose
// credential its new record d (nil: deleted) no longer lets in.
func (s *Server) muxKeysChangedDevice(id string, d *wire.Device) int {
	return s.closeDataSessions(id, func(m *muxSession) bool {
		return deviceStale(parseCredential(m.cred), d)
	}, "the credential that opened the session was withdrawn")
}

// muxKeysChangedPolicy closes the sessions that a key of policy name
// opened and that its new version p (nil: deleted) no longer grants:
// services' (ServiceConnect) and devices' (DeviceConnect).
func (s *Server) muxKeysChangedPolicy(name string, p *registry.Policy) int {
	list := s.muxWhere(func(m *muxSession) bool {
		if m.kind == muxService {
			return m.policy == name && policyStale(name, m.key, p, registry.ServiceConnect)
		}
		c := parseCredential(m.cred)
		return c.kind == credPolicyKey && c.policy == name && policyStale(name, c.fp, p, registry.DeviceConnect)
	})
	for _, m := range list {
		m.close(ws.StatusPolicyViolation, "the key that opened the session was withdrawn")
	}
	return len(list)
}

// errPushFailed says a data session could not carry a stream: the request
// goes over MQTT instead.
var errPushFailed = errors.New("data session failed")

// pushStream asks the device for the stream on its data session m: a
// MuxRequest on a new stream, and the device's MuxAnswer within ctx. On
// 200 the session stream is the device's side of the stream in the relay.
// Any other status is the device's rejection. errTimeout: the device did
// not answer in time; errPushFailed: the session failed, ask over MQTT.
func (s *Server) pushStream(ctx context.Context, m *muxSession, req routeRequest) (int, error) {
	hdr, err := wire.AppendMuxHeader(nil, wire.MuxRequest{Name: req.Name, RID: rand.Text(), StreamID: req.streamID})
	if err != nil {
		return 0, fmt.Errorf("routing to device: %w", err)
	}
	// The request opens the stream: it leaves in the frame of the
	// stream's SYN. Should the session fail now, the device never
	// accepted anything on it: the request goes over MQTT instead.
	st, err := m.ys.OpenStreamWith(hdr)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errPushFailed, err)
	}
	s.metrics.muxStreams.WithLabelValues(muxDevice).Inc()
	deadline, _ := ctx.Deadline()
	st.SetDeadline(deadline)
	if req.early != nil {
		return s.pushEarly(ctx, st, req)
	}
	var ans wire.MuxAnswer
	if err := wire.ReadMuxHeader(st, &ans); err != nil {
		// No answer in time, or none the hub reads: the device's answer
		// still to come fails rather than opening a stream nobody joins.
		st.Reset()
		return 0, s.pushError(ctx, err)
	}
	st.SetDeadline(time.Time{})
	if ans.Status != http.StatusOK {
		st.Close()
		return ans.Status, nil
	}
	if err := s.relay.Attach(req.streamID, relay.SideDevice, st, true); err != nil {
		st.Reset()
		return 0, fmt.Errorf("routing to device: %w", err)
	}
	return http.StatusOK, nil
}

// pushError says why a push failed: the time ran out, or the session.
func (s *Server) pushError(ctx context.Context, err error) error {
	if errors.Is(err, yamux.ErrTimeout) || ctx.Err() != nil {
		return errTimeout
	}
	return fmt.Errorf("%w: %v", errPushFailed, err)
}

// pushEarly relays the stream from the moment its request went to the
// device (muxearly.go) and waits for the device's answer. A failure of the
// session now is the stream's: what the service sent went to the device.
func (s *Server) pushEarly(ctx context.Context, st *yamux.Stream, req routeRequest) (int, error) {
	g := req.early
	a := &answerReader{Stream: st, svc: g, id: req.streamID, answered: make(chan pushResult, 1)}
	if err := s.relay.AttachEarly(req.streamID, g, a, a.accepted); err != nil {
		st.Reset()
		return 0, fmt.Errorf("routing to device: %w", err)
	}
	g.used.Store(true)
	select {
	case res := <-a.answered:
		switch {
		case res.err == nil:
			return res.status, nil
		case errors.Is(res.err, yamux.ErrTimeout) || ctx.Err() != nil:
			return 0, errTimeout
		}
		return 0, fmt.Errorf("routing to device: data session: %w", res.err)
	case <-ctx.Done():
		if !g.race.CompareAndSwap(raceOpen, raceGaveUp) {
			// The device's acceptance came first: the service has it.
			res := <-a.answered
			return res.status, res.err
		}
		g.decide(gateRefused)
		st.SetReadDeadline(time.Now()) // the relay's wait for the answer ends
		return 0, errTimeout
	}
}
