package hub

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/wire"
)

// streamsSubject asks every node for the streams it is home to.
const streamsSubject = "tether.ctl.streams"

// Gathering waits this long at most for the nodes' answers, and stops
// sooner once answers have stopped coming for streamsQuiet: there is no
// list of live nodes to count them against.
const (
	streamsWait  = time.Second
	streamsQuiet = 100 * time.Millisecond
)

// localStreams is this node's part of GET /streams.
func (s *Server) localStreams() []wire.StreamInfo {
	list := s.relay.Streams()
	out := make([]wire.StreamInfo, 0, len(list))
	s.invMu.Lock()
	defer s.invMu.Unlock()
	for _, st := range list {
		var policy string
		if inv := s.invocations[st.ID]; inv != nil {
			policy = inv.policy
		}
		out = append(out, wire.StreamInfo{
			ID: st.ID, DeviceID: st.DeviceID, Name: st.Name, Node: s.node, Policy: policy,
			Opened: st.Opened.UTC(), Paired: st.PairedOK,
			BytesToDevice: st.BytesToDevice, BytesToService: st.BytesToService,
		})
	}
	return out
}

func (s *Server) onStreamsRequest(m *nats.Msg) { respondJSON(m, s.localStreams()) }

// handleStreams serves GET /streams: the streams open now on every node.
func (s *Server) handleStreams(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryRead); err != nil {
		unauthorized(w)
		return
	}
	dev, ok := s.deviceQuery(w, r)
	if !ok {
		return
	}
	all, answered := gatherAll[wire.StreamInfo](s, w, r, streamsSubject)
	if answered {
		return
	}
	if dev != "" {
		all = slices.DeleteFunc(all, func(st wire.StreamInfo) bool { return st.DeviceID != dev })
	}
	slices.SortFunc(all, func(a, b wire.StreamInfo) int {
		if c := strings.Compare(a.DeviceID, b.DeviceID); c != 0 {
			return c
		}
		return a.Opened.Compare(b.Opened)
	})
	writeJSON(w, all)
}

// gatherAll asks every node on subject and returns their answers, each
// a JSON T or []T, together; answered as gather's.
func gatherAll[T any](s *Server, w http.ResponseWriter, r *http.Request, subject string) (all []T, answered bool) {
	all = []T{}
	answered = s.gather(w, r, subject, nil, func(data []byte) bool {
		var part []T
		if json.Unmarshal(data, &part) == nil {
			all = append(all, part...)
		} else if one := new(T); json.Unmarshal(data, one) == nil {
			all = append(all, *one)
		}
		return true
	})
	return all, answered
}

// gather asks every node on subject and passes each answer to each until
// it returns false, or answers have stopped coming for streamsQuiet (the
// asking node answers too, so there is always a first one), or
// streamsWait has passed. It reports whether the request is done with:
// the client went away, or routing failed and it was answered 503.
func (s *Server) gather(w http.ResponseWriter, r *http.Request, subject string, data []byte, each func([]byte) bool) (answered bool) {
	inbox := s.nc.NewRespInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := s.nc.ChanSubscribe(inbox, replies)
	if err == nil {
		defer sub.Unsubscribe()
		err = s.nc.PublishRequest(subject, inbox, data)
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, wire.CodeServerError, "routing unavailable")
		return true
	}
	deadline := time.NewTimer(streamsWait)
	defer deadline.Stop()
	quiet := time.NewTimer(streamsWait)
	defer quiet.Stop()
	for {
		select {
		case m := <-replies:
			if !each(m.Data) {
				return false
			}
			quiet.Reset(streamsQuiet)
		case <-quiet.C:
			return false
		case <-deadline.C:
			return false
		case <-r.Context().Done():
			return true
		}
	}
}

// killSubject asks every node to end a stream if it is the stream's home;
// every node answers, with its name if it was, so that the asking node
// need not wait out the nodes that do not hold it.
const killSubject = "tether.ctl.kill"

// killRequest is the message on killSubject.
type killRequest struct {
	ID     string `json:"id"`
	Policy string `json:"policy"` // who asked, for the stream's record
}

// killLocal ends stream id if this node holds it, waiting or relaying,
// and reports whether it did.
func (s *Server) killLocal(id, policy string) bool {
	return s.relay.CloseStreams([]string{id}, wire.KillReason(policy)) > 0
}

func (s *Server) onKillRequest(m *nats.Msg) {
	var req killRequest
	if json.Unmarshal(m.Data, &req) != nil || req.ID == "" {
		return
	}
	// The answer goes first: ending a stream may wait on a slow side's
	// close frame, and the asking node stops listening soon after the
	// other nodes' noes.
	if !slices.ContainsFunc(s.relay.Streams(), func(st relay.Info) bool { return st.ID == req.ID }) {
		_ = m.Respond(nil)
		return
	}
	_ = m.Respond([]byte(s.node))
	s.killLocal(req.ID, req.Policy)
}

// validStreamID checks a stream id from a request path: the relay's ids
// are base32, and no id holds anything else.
func validStreamID(id string) error {
	if id == "" || len(id) > 128 || strings.Trim(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
		return fmt.Errorf("%q is not a stream id (the streamId of GET /streams or of a stream-log record)", id)
	}
	return nil
}

// handleKillStream serves DELETE /streams/{id}: an operator ends an open
// stream, on whichever node is its home. Opening streams is what the
// policy must be allowed (ServiceConnect): a right to read the registry
// is no right to end someone's session. Both sides get close 1008, and
// the stream's record says closedBy hub, "killed by policy NAME".
func (s *Server) handleKillStream(w http.ResponseWriter, r *http.Request) {
	policy, err := s.authService(r, registry.ServiceConnect)
	if err != nil {
		unauthorized(w)
		return
	}
	id := r.PathValue("id")
	if err := validStreamID(id); err != nil {
		s.badRequest(w, r, err)
		return
	}
	node := s.node
	if !s.killLocal(id, policy.Name) {
		node = ""
		b, _ := json.Marshal(killRequest{ID: id, Policy: policy.Name})
		answered := s.gather(w, r, killSubject, b, func(answer []byte) bool {
			node = string(answer)
			return node == ""
		})
		if answered {
			return
		}
		if node == "" {
			writeError(w, http.StatusNotFound, wire.CodeStreamNotFound, fmt.Sprintf("no node holds an open stream %s: it ended, or never was", id))
			return
		}
	}
	s.log.Info("stream killed", "id", id, "policy", policy.Name, "remote", r.RemoteAddr, "node", node)
	w.WriteHeader(http.StatusNoContent)
}
