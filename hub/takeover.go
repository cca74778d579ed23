package hub

import (
	"encoding/json"
	"strings"

	"github.com/nats-io/nats.go"
)

// sessionSubject reaches every node: a node that takes a device's MQTT
// session announces it there, and any other node still holding a session
// for that device drops it.
//
// Why: a device that lost its link to node A (a dead NAT entry, a network
// split) and reconnected to node B may still look connected on A until
// A's keep-alive timer fires. Meanwhile both nodes subscribe to the
// device's stream subject, and A would take stream requests into a dead
// link. The newest session always wins: a node drops its own session on
// any other session's claim, so a stale session can at worst cause one
// extra reconnect, never stay.
const sessionSubject = "tether.ctl.session"

// sessionClaim is what a node publishes when a device connects to it.
type sessionClaim struct {
	Device  string `json:"device"`  // MQTT client id: deviceId or deviceId/moduleId
	Session string `json:"session"` // node/seq, as in the presence bucket
}

// claimSession announces a new local session. Callers hold s.mu; Publish
// only buffers.
func (s *Server) claimSession(clientID, sessionID string) {
	b, _ := json.Marshal(sessionClaim{Device: clientID, Session: sessionID})
	if err := s.nc.Publish(sessionSubject, b); err != nil {
		s.log.Warn("announcing a device session", "device", clientID, "err", err)
	}
}

// onSessionClaim drops the local session of a device that connected to
// another node.
func (s *Server) onSessionClaim(m *nats.Msg) {
	var c sessionClaim
	if err := json.Unmarshal(m.Data, &c); err != nil || c.Device == "" || c.Session == "" {
		return
	}
	node, _, _ := strings.Cut(c.Session, "/")
	if node == s.node {
		// Our own claim: the broker already replaced any older session
		// of this device here.
		return
	}
	s.mu.Lock()
	sess := s.sessions[c.Device]
	stale := sess != nil && sess.id != c.Session
	s.mu.Unlock()
	if !stale {
		return
	}
	s.log.Info("device connected to another node; dropping its session here", "device", c.Device, "node", node)
	s.broker.Disconnect(c.Device)
}
