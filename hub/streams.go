package hub

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-io/tether/hub/registry"
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
	for _, st := range list {
		out = append(out, wire.StreamInfo{
			ID: st.ID, DeviceID: st.DeviceID, Name: st.Name, Node: s.node,
			Opened: st.Opened.UTC(), Paired: st.PairedOK,
			BytesToDevice: st.BytesToDevice, BytesToService: st.BytesToService,
		})
	}
	return out
}

func (s *Server) onStreamsRequest(m *nats.Msg) {
	b, _ := json.Marshal(s.localStreams())
	_ = m.Respond(b)
}

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
	inbox := s.nc.NewRespInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := s.nc.ChanSubscribe(inbox, replies)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, wire.CodeServerError, "routing unavailable")
		return
	}
	defer sub.Unsubscribe()
	if err := s.nc.PublishRequest(streamsSubject, inbox, nil); err != nil {
		writeError(w, http.StatusServiceUnavailable, wire.CodeServerError, "routing unavailable")
		return
	}
	all := []wire.StreamInfo{}
	deadline := time.NewTimer(streamsWait)
	defer deadline.Stop()
	quiet := time.NewTimer(streamsWait)
	defer quiet.Stop()
gather:
	for {
		select {
		case m := <-replies:
			var part []wire.StreamInfo
			if json.Unmarshal(m.Data, &part) == nil {
				all = append(all, part...)
			}
			quiet.Reset(streamsQuiet)
		case <-quiet.C:
			break gather
		case <-deadline.C:
			break gather
		case <-r.Context().Done():
			return
		}
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
