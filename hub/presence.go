package hub

import (
	"context"
	"sync"
	"time"
)

// A device's connection state goes to the registry from one worker, so
// that a slow store never stalls MQTT sessions or routing. What waits for
// the worker is one entry a device, not one a change: only a device's
// latest state matters, so a reconnect storm against a slow registry costs
// memory bounded by the number of devices, the registry sees each device's
// state once however often it changed meanwhile, and queueing a change
// never blocks, whatever lock its caller holds (s.mu, a broker stripe).

// presenceStore is where the worker writes: the registry, which a test
// may replace with one that stalls.
type presenceStore interface {
	SetConnected(ctx context.Context, id, session string, connected bool) error
	SetClientConnected(ctx context.Context, id, session, clientType string) error
	Touch(ctx context.Context, id, session string) error
	RecordTakeovers(ctx context.Context, id string, n int, displaced, by string) (lastHour int, err error)
}

// presenceState is what a device has waiting for the registry, written in
// this order: connect, then disconnect, then takeovers, then touch.
type presenceState struct {
	// connect is the session to record as connected. A connect always
	// wins in the registry, so one replaces every change before it.
	connect string
	// clientType is what connect's connection named itself
	// (DeviceClientType).
	clientType string
	// disconnect is the session to record as disconnected. It follows
	// connect when that session ended before its connect was written:
	// together they are what the registry would have seen one by one
	// (the registry's compare-and-set keeps a late disconnect from hiding
	// a newer session on another node).
	disconnect string
	// touch is the session whose activity to record (lastActivityTime).
	touch string
	// takeovers counts the takeovers not yet recorded; last is the last
	// one's two addresses (takeover.go).
	takeovers int
	last      takeover
}

// presenceQueue holds each device's presenceState until the worker takes
// it, devices in the order they first had something waiting.
type presenceQueue struct {
	mu      sync.Mutex
	pending map[string]*presenceState // by MQTT client id
	order   []string                  // client ids in pending, oldest first
	store   presenceStore
	closed  bool
	wake    chan struct{} // a token: pending may have an entry, or closed
}

func newPresenceQueue(store presenceStore) *presenceQueue {
	return &presenceQueue{pending: make(map[string]*presenceState), store: store, wake: make(chan struct{}, 1)}
}

// change applies edit to clientID's waiting state, creating it. Changes
// after close are dropped: Close has queued the last ones.
func (q *presenceQueue) change(clientID string, edit func(p *presenceState)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	p := q.pending[clientID]
	if p == nil {
		p = &presenceState{}
		q.pending[clientID] = p
		q.order = append(q.order, clientID)
	}
	edit(p)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *presenceQueue) connected(clientID, sessionID, clientType string) {
	q.change(clientID, func(p *presenceState) {
		*p = presenceState{connect: sessionID, clientType: clientType, takeovers: p.takeovers, last: p.last}
	})
}

func (q *presenceQueue) disconnected(clientID, sessionID string) {
	q.change(clientID, func(p *presenceState) {
		if p.connect != "" && p.connect != sessionID {
			// An older session's: the newer connect wins anyway.
			return
		}
		p.disconnect, p.touch = sessionID, ""
	})
}

func (q *presenceQueue) touched(clientID, sessionID string) {
	q.change(clientID, func(p *presenceState) {
		if p.connect != sessionID && p.disconnect != sessionID {
			// (A connect or disconnect records the activity too.)
			p.touch = sessionID
		}
	})
}

func (q *presenceQueue) takenOver(clientID string, t takeover) {
	q.change(clientID, func(p *presenceState) {
		p.takeovers++
		p.last = t
	})
}

// next waits for a device with something waiting and takes its state; ok
// is false once the queue is closed and empty.
func (q *presenceQueue) next() (clientID string, p presenceState, store presenceStore, ok bool) {
	for {
		q.mu.Lock()
		if len(q.order) > 0 {
			clientID = q.order[0]
			q.order[0] = ""
			q.order = q.order[1:]
			p = *q.pending[clientID]
			delete(q.pending, clientID)
			store = q.store
			q.mu.Unlock()
			return clientID, p, store, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return "", presenceState{}, nil, false
		}
		<-q.wake
	}
}

// close lets the worker end once it has written what is waiting.
func (q *presenceQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// markPresence queues a connection-state change for the registry, a
// connect with what the device named itself. It never blocks; callers
// hold s.mu.
func (s *Server) markPresence(clientID, sessionID string, connected bool) {
	if connected {
		s.presence.connected(clientID, sessionID, s.broker.ClientType(clientID))
	} else {
		s.presence.disconnected(clientID, sessionID)
	}
}

func (s *Server) presenceWorker() {
	defer s.wg.Done()
	for {
		clientID, p, store, ok := s.presence.next()
		if !ok {
			return
		}
		s.writePresence(store, clientID, p)
	}
}

// writePresence writes one device's waiting state, each part with the
// time a storage call made on a device's behalf gets.
func (s *Server) writePresence(store presenceStore, clientID string, p presenceState) {
	write := func(fn func(ctx context.Context) error) {
		ctx, cancel := ctxTimeout(context.Background())
		defer cancel()
		if err := fn(ctx); err != nil {
			s.log.Warn("recording connection state", "device", clientID, "err", err)
		}
	}
	if p.connect != "" {
		write(func(ctx context.Context) error {
			return store.SetClientConnected(ctx, clientID, p.connect, p.clientType)
		})
	}
	if p.disconnect != "" {
		write(func(ctx context.Context) error { return store.SetConnected(ctx, clientID, p.disconnect, false) })
	}
	if p.takeovers > 0 {
		write(func(ctx context.Context) error { return s.recordTakeover(ctx, store, clientID, p.last, p.takeovers) })
	}
	if p.touch != "" {
		write(func(ctx context.Context) error { return store.Touch(ctx, clientID, p.touch) })
	}
}

// touchEvery bounds how often a busy device's lastActivityTime is written.
const touchEvery = 10 * time.Second

// touched records that a device with a session here answered.
func (s *Server) touched(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[clientID]
	if sess == nil || s.closed || time.Since(sess.touched) < touchEvery {
		return
	}
	sess.touched = time.Now()
	s.presence.touched(clientID, sess.id)
}
