package hub

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/internal/version"
)

// nodesSubject asks every node to describe itself (GET /nodes): there is
// no list of a cluster's nodes but the ones that answer.
const nodesSubject = "tether.ctl.nodes"

// NodeInfo is one node of the hub, as GET /nodes lists it.
type NodeInfo struct {
	Node       string    `json:"node"` // unique: the name and a suffix of this run's
	Name       string    `json:"name"` // as --node-name (or the host) gave it
	Version    string    `json:"version"`
	Commit     string    `json:"commit,omitempty"`
	GoVersion  string    `json:"goVersion"`
	Started    time.Time `json:"started"`
	Ready      bool      `json:"ready"`
	ReadyError string    `json:"readyError,omitempty"`
	Draining   bool      `json:"draining"`
	Devices    int       `json:"devices"` // device sessions it holds
	Streams    int       `json:"streams"` // streams it is home to
}

// started is when this process began, near enough to its node's start.
var started = time.Now().UTC()

func (s *Server) localNode() NodeInfo {
	v := version.Get()
	n := NodeInfo{
		Node: s.node, Name: s.opts.Cluster.Name(),
		Version: v.Version, Commit: v.Commit, GoVersion: v.GoVersion,
		Started: started, Draining: s.Draining(),
		Streams: len(s.relay.Streams()),
	}
	if err := s.Ready(); err != nil {
		n.ReadyError = err.Error()
	} else {
		n.Ready = true
	}
	s.mu.Lock()
	n.Devices = len(s.sessions)
	s.mu.Unlock()
	return n
}

func (s *Server) onNodesRequest(m *nats.Msg) { respondJSON(m, s.localNode()) }

// respondJSON answers a gathering (gatherAll) with v.
func respondJSON(m *nats.Msg, v any) {
	b, _ := json.Marshal(v)
	_ = m.Respond(b)
}

// handleNodes serves GET /nodes: every node that answers within the
// gathering's time, by name.
func (s *Server) handleNodes(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryRead); err != nil {
		unauthorized(w)
		return
	}
	all, answered := gatherAll[NodeInfo](s, w, r, nodesSubject)
	if answered {
		return
	}
	slices.SortFunc(all, func(a, b NodeInfo) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Node, b.Node)
	})
	writeJSON(w, all)
}
