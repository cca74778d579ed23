package hub

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/wire"
)

// codeServiceUnavailable is Azure's ServiceUnavailable error code.
const codeServiceUnavailable = 503001

// lameDuck is a node's drain state. Its zero value is a node at work.
type lameDuck struct {
	draining atomic.Bool

	mu     sync.Mutex
	waiter chan struct{} // Drain's wake-up when a stream ends; nil when nobody waits
}

// notify wakes Drain, if it waits, to count the streams again.
func (l *lameDuck) notify() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiter != nil {
		select {
		case l.waiter <- struct{}{}:
		default:
		}
	}
}

// relayDone is the relay's OnDone: the stream log, then Drain's count.
func (s *Server) relayDone(info relay.Info) {
	s.streamDone(info)
	s.lame.notify()
}

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.lame.draining.Load() }

// Drain puts the node in lame-duck mode, for a rolling restart: it takes
// no new work and waits for the work it has to end, while the rest of the
// cluster takes over.
//
//   - New streams homed here are refused with 503 ServiceUnavailable, so a
//     service (or its load balancer) retries on another node. Requests for
//     devices connected here, from streams homed elsewhere, still pass.
//     A node that is the whole hub (cluster.Cluster.Alone) says only that
//     the hub is shutting down, here and below: there is no other node.
//   - /readyz answers 503, so a load balancer stops sending work here.
//   - New device connections over WebSocket are refused with 503 (the
//     binary closes the MQTT over TLS listener itself), and so are new
//     mux sessions; those open are told to go away (yamux GoAway): no
//     new stream opens on them, their open streams run on.
//   - Devices connected here are disconnected, each at a random moment
//     within spread, so that they reconnect to other nodes without all
//     arriving at once.
//   - Open streams run on until they end.
//   - Stream-log followers (GET /streamlogs?follow=true) are ended: they
//     resume after their last record, elsewhere or once the node is back.
//
// Drain returns nil once every stream has ended and every device has been
// moved, or ctx's error (with how many streams are left) when ctx ends
// first. Either way the caller then calls Close, which ends what is left.
func (s *Server) Drain(ctx context.Context, spread time.Duration) error {
	s.lame.draining.Store(true)
	s.follow.end()
	s.mu.Lock()
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	muxes := s.goAwayMuxes()
	s.log.Info("draining: refusing new streams and devices", "devices", len(ids), "streams", s.relay.Active(), "sessions", muxes, "spread", spread)

	moved := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(moved)
		s.moveDevices(ctx, ids, spread)
	}()

	ch := make(chan struct{}, 1)
	s.lame.mu.Lock()
	s.lame.waiter = ch
	s.lame.mu.Unlock()
	defer func() {
		s.lame.mu.Lock()
		s.lame.waiter = nil
		s.lame.mu.Unlock()
	}()
	// Counting after installing the waiter: a stream that ends in between
	// leaves a wake-up in ch, never a missed one.
	for n := s.relay.Active(); n > 0; n = s.relay.Active() {
		select {
		case <-ch:
		case <-ctx.Done():
			<-moved
			return fmt.Errorf("hub: draining: %d streams still open: %w", s.relay.Active(), ctx.Err())
		}
	}
	select {
	case <-moved:
	case <-ctx.Done():
		<-moved
		return fmt.Errorf("hub: draining: devices not all moved: %w", ctx.Err())
	}
	s.log.Info("drained: no stream left")
	return nil
}

// moveDevices disconnects the given devices, each at a uniformly random
// moment within spread, or all at once when ctx ends first.
func (s *Server) moveDevices(ctx context.Context, ids []string, spread time.Duration) {
	type move struct {
		at time.Duration
		id string
	}
	moves := make([]move, len(ids))
	for i, id := range ids {
		var at time.Duration
		if spread > 0 {
			at = rand.N(spread)
		}
		moves[i] = move{at, id}
	}
	slices.SortFunc(moves, func(a, b move) int { return cmp.Compare(a.at, b.at) })
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for _, m := range moves {
		if d := m.at - time.Since(start); d > 0 && ctx.Err() == nil {
			t.Reset(d)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
		s.broker.Disconnect(m.id)
	}
	if len(moves) > 0 {
		s.log.Info("draining: devices told to move", "devices", len(moves))
	}
}

// refuseWhileDraining answers, while the node drains, the requests that
// would start new work here. It reports whether it answered.
func (s *Server) refuseWhileDraining(w http.ResponseWriter, r *http.Request) bool {
	if !s.lame.draining.Load() {
		return false
	}
	p := r.URL.Path
	switch {
	case isStreamRequest(p): // POST, or the one-request GET
		w.Header().Set("Retry-After", "1")
		h := w.Header()
		h.Set(wire.HeaderErrorCode, "ServiceUnavailable")
		h.Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		msg := "This hub node is shutting down; retry the request on another node."
		if s.opts.Cluster.Alone() {
			msg = "This hub is shutting down."
		}
		_, _ = w.Write(wire.EncodeError(codeServiceUnavailable, msg))
		return true
	case p == "/readyz":
		http.Error(w, "not ready: draining", http.StatusServiceUnavailable)
		return true
	case p == wire.PathMQTTWebSocket || isMuxPath(p):
		w.Header().Set("Retry-After", "1")
		msg := "this hub node is shutting down; connect to another node"
		if s.opts.Cluster.Alone() {
			msg = "this hub is shutting down"
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
		return true
	}
	return false
}
