package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-io/tether/hub/broker"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/wire"
)

// Subjects of one device, by MQTT client id. Only the node holding the
// device's session subscribes, so "no responders" means offline everywhere.
func streamSubject(clientID string) string {
	return "tether.dev." + cluster.SubjectToken(clientID) + ".stream"
}

// kickSubject reaches every node: a disabled or deleted device must lose
// its MQTT session (on one node) and its open streams (homed on any node).
const kickSubject = "tether.ctl.kick"

// routeRequest travels from a stream's home node to the device's node.
type routeRequest struct {
	Name      string `json:"name"`
	URL       string `json:"url"`
	Token     string `json:"token"`
	TimeoutMs int64  `json:"timeoutMs"`

	// streamID is set by the stream's home node for a stream homed here,
	// never sent: only such a stream may be pushed on the device's data
	// session, whose stream joins this node's relay.
	streamID string
	// early is the service's session stream, for a stream asked on a
	// session: pushed, it is relayed from the request on (muxearly.go).
	early *writeGate
}

// routeReply is the device's answer, or why there is none.
type routeReply struct {
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"` // replyOffline or replyTimeout
}

const (
	replyOffline = "offline"
	replyTimeout = "timeout"
)

// Errors of askDevice, mapped to Azure's codes by the REST handler.
var (
	errOffline = errors.New("device is not online")
	errTimeout = errors.New("device did not answer in time")
)

func wireBridgePath(hub string, st *relay.Stream) string {
	return wire.BridgePath(hub, st.DeviceID, st.Name, st.ID)
}

// deviceConnected runs when a device's MQTT session is up on this node.
func (s *Server) deviceConnected(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	old := s.sessions[clientID]
	if old != nil {
		// A session the broker took over without a disconnect callback.
		_ = old.sub.Unsubscribe()
	}
	s.seq++
	sess := &session{id: s.node + "/" + strconv.FormatUint(s.seq, 10), touched: time.Now()}
	sub, err := s.nc.ChanSubscribe(streamSubject(clientID), s.routeReqs)
	if err != nil {
		s.log.Error("cannot route to device; disconnecting it", "device", clientID, "err", err)
		s.broker.Disconnect(clientID)
		return
	}
	sess.sub = sub
	s.sessions[clientID] = sess
	if old == nil && strings.Contains(clientID, "/") {
		s.keys.modules++
	}
	s.markPresence(clientID, sess.id, true)
	s.claimSession(clientID, sess.id)
	s.recheckSession(clientID)
	s.metrics.mqttConns.Inc()
	s.log.Info("device connected", "device", clientID)
}

// deviceDisconnected runs when that session ends.
func (s *Server) deviceDisconnected(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[clientID]
	if sess == nil {
		return
	}
	delete(s.sessions, clientID)
	if strings.Contains(clientID, "/") {
		s.keys.modules--
	}
	_ = sess.sub.Unsubscribe()
	s.markPresence(clientID, sess.id, false)
	s.dataSessionEnded(clientID)
	s.log.Info("device disconnected", "device", clientID)
}

// routeLoop hands the stream requests of the devices with a session here
// to onStreamRequest, in order of arrival.
func (s *Server) routeLoop() {
	defer s.wg.Done()
	for {
		select {
		case m := <-s.routeReqs:
			clientID, ok := subjectClient(m.Subject)
			if !ok {
				s.log.Warn("route request on an unexpected subject", "subject", m.Subject)
				continue
			}
			s.onStreamRequest(clientID, m)
		case <-s.routeReqsDone:
			return
		}
	}
}

// subjectClient reverses streamSubject.
func subjectClient(subject string) (string, bool) {
	tok, ok := strings.CutPrefix(subject, "tether.dev.")
	if !ok {
		return "", false
	}
	if tok, ok = strings.CutSuffix(tok, ".stream"); !ok {
		return "", false
	}
	clientID, err := cluster.ParseSubjectToken(tok)
	return clientID, err == nil
}

// onStreamRequest serves a stream request for a device whose session is
// on this node.
func (s *Server) onStreamRequest(clientID string, m *nats.Msg) {
	var req routeRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		s.log.Warn("malformed route request", "device", clientID, "err", err)
		return
	}
	// Answering blocks on the device; the NATS callback goroutine must
	// not, or one slow device would delay every other request.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		reply := s.forwardToDevice(clientID, req)
		b, _ := json.Marshal(reply)
		if err := m.Respond(b); err != nil {
			s.log.Warn("answering route request", "device", clientID, "err", err)
		}
	}()
}

func (s *Server) forwardToDevice(clientID string, req routeRequest) routeReply {
	status, err := s.askLocal(context.Background(), clientID, req, time.Duration(req.TimeoutMs)*time.Millisecond)
	switch {
	case err == nil:
		return routeReply{Status: status}
	case errors.Is(err, errOffline):
		return routeReply{Error: replyOffline}
	default:
		return routeReply{Error: replyTimeout}
	}
}

// askDevice sends a stream request to the device wherever its session is
// and returns its answer: the status (200 accepts), errOffline or
// errTimeout.
func (s *Server) askDevice(ctx context.Context, clientID string, req routeRequest, timeout time.Duration) (int, error) {
	// A device with its session on this node is asked directly: the NATS
	// round trip through this node's own server, and the encoding on both
	// sides of it, were a tenth of a stream's setup CPU. Should that
	// session turn out gone (taken over by a newer one on another node,
	// not yet dropped here), the request still goes where NATS routes it.
	if s.hasSession(clientID) {
		status, err := s.askLocal(ctx, clientID, req, timeout)
		if !errors.Is(err, errOffline) {
			return status, err
		}
	}
	req.TimeoutMs = timeout.Milliseconds()
	b, _ := json.Marshal(req)
	// The device's node gives up at timeout; wait a little longer for its
	// word so a late "timeout" is told apart from a lost node.
	ctx, cancel := context.WithTimeout(ctx, timeout+500*time.Millisecond)
	defer cancel()
	m, err := s.nc.RequestWithContext(ctx, streamSubject(clientID), b)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return 0, errOffline
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return 0, errTimeout
	case err != nil:
		return 0, fmt.Errorf("routing to device: %w", err)
	}
	var reply routeReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return 0, fmt.Errorf("routing to device: malformed reply: %w", err)
	}
	switch reply.Error {
	case "":
		return reply.Status, nil
	case replyOffline:
		return 0, errOffline
	default:
		return 0, errTimeout
	}
}

// hasSession reports whether clientID has a session on this node.
func (s *Server) hasSession(clientID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[clientID] != nil
}

// askLocal is askDevice for a device whose session is on this node: what
// onStreamRequest does for a request that came over NATS, without NATS.
//
// A stream homed here goes on the device's data session when it has one
// here (pushStream); should the session fail, over MQTT after all. A
// Tether device without one is told over MQTT that it may open one.
func (s *Server) askLocal(ctx context.Context, clientID string, req routeRequest, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := s.dataSession(clientID)
	if m != nil && req.streamID != "" {
		status, err := s.pushStream(ctx, m, req)
		switch {
		case err == nil:
			s.touched(clientID)
			return status, nil
		case !errors.Is(err, errPushFailed):
			return 0, err
		}
		s.log.Debug("data session failed; asking over MQTT", "device", clientID, "err", err)
	}
	mux := m == nil && !s.opts.NoSessions && s.broker.Tether(clientID)
	status, err := s.broker.RequestStream(ctx, clientID, wire.StreamRequest{Name: req.Name, URL: req.URL, Token: req.Token, Mux: mux})
	switch {
	case err == nil:
		s.touched(clientID)
		return status, nil
	case errors.Is(err, broker.ErrNotConnected):
		return 0, errOffline
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return 0, errTimeout
	default:
		return 0, fmt.Errorf("routing to device: %w", err)
	}
}

// kick disconnects a device, and its modules, from every node and ends
// its open streams.
func (s *Server) kick(deviceID string) {
	if err := s.nc.Publish(kickSubject, []byte(deviceID)); err != nil {
		s.log.Warn("disconnecting device", "device", deviceID, "err", err)
	}
}

func (s *Server) onKick(m *nats.Msg) {
	deviceID := string(m.Data)
	s.mu.Lock()
	var local []string
	for clientID := range s.sessions {
		if clientID == deviceID || strings.HasPrefix(clientID, deviceID+"/") {
			local = append(local, clientID)
		}
	}
	s.mu.Unlock()
	for _, clientID := range local {
		s.broker.Disconnect(clientID)
	}
	n := s.relay.CloseDevice(deviceID)
	data := s.closeDataSessions(deviceID, func(*muxSession) bool { return true }, "device disabled or deleted")
	if n > 0 || len(local) > 0 || data > 0 {
		s.log.Info("device refused", "device", deviceID, "sessions", len(local), "dataSessions", data, "streams", n)
	}
}
