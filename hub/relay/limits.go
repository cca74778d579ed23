package relay

import (
	"fmt"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Names of the limits the relay enforces, as passed to Options.OnLimit and
// carried by LimitError: the label values of the hub's
// tether_limited_total metric.
const (
	LimitStreamsPerDevice  = "streams_per_device"
	LimitStreamsPerHub     = "streams_per_hub"
	LimitPendingHandshakes = "pending_handshakes"
	LimitMessageSize       = "message_size"
	LimitIdleTimeout       = "idle_timeout"
)

// LimitError is Open's answer when a stream would exceed one of the
// relay's caps. The hub turns it into 429 ThrottlingException.
type LimitError struct {
	Limit string // one of the Limit* names
	Max   int
}

func (e *LimitError) Error() string {
	switch e.Limit {
	case LimitStreamsPerDevice:
		return fmt.Sprintf("Too many concurrent streams to this device (at most %d)", e.Max)
	case LimitPendingHandshakes:
		return fmt.Sprintf("Too many streams waiting for a side to connect (at most %d)", e.Max)
	default:
		return fmt.Sprintf("Too many concurrent streams on this hub (at most %d)", e.Max)
	}
}

// admitLocked checks the caps on open streams for one more stream to
// deviceID. r.mu is held.
func (r *Relay) admitLocked(deviceID string) error {
	switch {
	case r.maxStreams > 0 && len(r.streams) >= r.maxStreams:
		return &LimitError{LimitStreamsPerHub, r.maxStreams}
	case r.maxPending > 0 && r.pending >= r.maxPending:
		return &LimitError{LimitPendingHandshakes, r.maxPending}
	case r.maxPerDevice > 0 && r.perDevice[deviceID] >= r.maxPerDevice:
		return &LimitError{LimitStreamsPerDevice, r.maxPerDevice}
	}
	return nil
}

// addLocked records a new, unpaired stream. r.mu is held.
func (r *Relay) addLocked(st *stream) {
	r.streams[st.ID] = st
	r.perDevice[st.DeviceID]++
	r.pending++
}

// removeLocked forgets a stream, paired or not. r.mu is held.
func (r *Relay) removeLocked(st *stream) {
	if r.streams[st.ID] != st {
		return
	}
	delete(r.streams, st.ID)
	if n := r.perDevice[st.DeviceID] - 1; n > 0 {
		r.perDevice[st.DeviceID] = n
	} else {
		delete(r.perDevice, st.DeviceID)
	}
	if st.pipe == nil {
		r.pending--
	}
}

func (r *Relay) limited(limit, detail string) {
	if r.onLimit != nil {
		r.onLimit(limit, detail)
	}
}

// messageTooBig tracks the size of the data message a frame belongs to
// (msg, the bytes of its earlier fragments) and reports whether the frame
// takes it past the relay's maximum.
func (r *Relay) messageTooBig(msg *int64, h ws.Header) bool {
	if h.OpCode != ws.OpContinuation {
		*msg = 0
	}
	if r.maxMessage > 0 && h.Length > r.maxMessage-*msg {
		return true
	}
	*msg += h.Length
	return false
}

// tooBig ends the stream on an oversized message from src: 1009 to src,
// 1001 to the other side, as with any other end of src.
func (pp *pipe) tooBig(src *peer, dir string) {
	what := fmt.Sprintf("message larger than %d bytes", pp.r.maxMessage)
	pp.r.limited(LimitMessageSize, dir+": "+what)
	pp.endBy(src, ws.NewCloseFrameBody(ws.StatusMessageTooBig, what), dir+": "+what)
}

// touch records data on the stream, for the idle timeout.
func (pp *pipe) touch() {
	if pp.r.idle > 0 {
		pp.active.Store(time.Now().UnixNano())
	}
}

// watchIdle ends the stream once no data has crossed it either way for
// the relay's idle timeout, and returns a func that stops watching. Pings
// and pongs do not count: a keepalive must not keep an idle tunnel open
// for ever, which is what the operator who set the timeout asked for.
func (pp *pipe) watchIdle() (stop func()) {
	idle := pp.r.idle
	if idle <= 0 {
		return func() {}
	}
	pp.touch()
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	check := func() {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return
		}
		quiet := time.Since(time.Unix(0, pp.active.Load()))
		if quiet < idle {
			t.Reset(idle - quiet)
			mu.Unlock()
			return
		}
		stopped = true
		mu.Unlock()
		// On the timer's own goroutine, which run outlives: stop closes
		// both conns, so run's copy loops end only after it.
		what := fmt.Sprintf("no data for %v", idle)
		pp.r.limited(LimitIdleTimeout, what)
		bye := ws.NewCloseFrameBody(ws.StatusGoingAway, "stream idle: "+what)
		pp.stop(ClosedByHub, "idle timeout: "+what, [2][]byte{bye, bye})
	}
	mu.Lock()
	t = time.AfterFunc(idle, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}
