package hub

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

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
	// Remote is the new connection's remote address, for the node that
	// drops the old one to report (and tell the device) who took over.
	Remote string `json:"remote,omitempty"`
}

// claimSession announces a new local session. Callers hold s.mu; Publish
// only buffers.
func (s *Server) claimSession(clientID, sessionID string) {
	b, _ := json.Marshal(sessionClaim{Device: clientID, Session: sessionID, Remote: s.broker.Remote(clientID)})
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
	s.broker.TakeOver(c.Device, c.Remote)
}

// A takeover is a newer connection with a device's identity replacing its
// open session (Azure's rule: the new one wins). Once is routine: a device
// whose link died comes back before the hub has noticed. Again and again
// within the hour is an operator's problem, two agents holding the one
// key (a cloned SD card, a test agent left running), and is logged as a
// warning. Each takeover is counted in the device's presence, which
// `tether devices show` (GET /devices/{id}) reports.

// takeoverWarnEvery bounds the warnings of one device: a pair of Azure SDK
// clones, which retry at once, take over many times a second.
const takeoverWarnEvery = time.Minute

// takeover is one takeover's two remote addresses.
type takeover struct {
	displaced, by string
}

// takeoverLine is when a device's last takeover warning was logged, and
// how many were held back since.
type takeoverLine struct {
	at         time.Time
	suppressed int
}

// sessionTakenOver is the broker's OnTakeover: it queues the takeover for
// the presence worker (presence.go), which counts it and logs it
// (recordTakeover) after the new session's connect.
func (s *Server) sessionTakenOver(clientID, displaced, by string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.presence.takenOver(clientID, takeover{displaced: displaced, by: by})
}

// recordTakeover counts n takeovers, the last one t, in the registry and
// logs them, at info the first time in an hour and as a warning (one a
// minute per device) after that. n is more than one only when takeovers
// came faster than the registry took them.
func (s *Server) recordTakeover(ctx context.Context, store presenceStore, clientID string, t takeover, n int) error {
	var (
		lastHour int
		err      error
	)
	if !strings.Contains(clientID, "/") { // a module has no presence of its own
		lastHour, err = store.RecordTakeovers(ctx, clientID, n, t.displaced, t.by)
	}
	args := []any{"device", clientID, "displaced", t.displaced, "by", t.by}
	if n > 1 {
		args = append(args, "takeovers", n)
	}
	if lastHour < 2 {
		s.log.Info("session taken over", args...)
		return err
	}
	if ok, suppressed := s.allowTakeoverWarning(clientID, time.Now()); !ok {
		return err
	} else if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	args = append(args, "last_hour", lastHour,
		"hint", "two connections keep replacing each other: is another agent running with this device's key (a cloned SD card)?")
	s.log.Log(ctx, slog.LevelWarn, "session taken over", args...)
	return err
}

// allowTakeoverWarning reports whether a takeover warning for clientID may
// be logged now, and how many were held back since the last one.
func (s *Server) allowTakeoverWarning(clientID string, now time.Time) (bool, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.takeoverLog == nil {
		s.takeoverLog = make(map[string]takeoverLine)
	}
	l, seen := s.takeoverLog[clientID]
	if seen && now.Sub(l.at) < takeoverWarnEvery {
		l.suppressed++
		s.takeoverLog[clientID] = l
		return false, 0
	}
	if !seen && len(s.takeoverLog) >= 1024 {
		// Forget the devices that have been quiet for a while, so the
		// table holds the ones flapping now.
		for id, l := range s.takeoverLog {
			if now.Sub(l.at) >= takeoverWarnEvery {
				delete(s.takeoverLog, id)
			}
		}
	}
	s.takeoverLog[clientID] = takeoverLine{at: now}
	return true, l.suppressed
}
