package hub

// Early data: a stream a service opens on its session and the hub pushes
// on the device's data session is relayed from the moment the request
// goes to the device, so that what the service wrote behind its MuxOpen
// reaches the device right behind the MuxRequest, before the device
// answered: a new connection's first byte echoed costs one round trip to
// the device. Two gates keep the protocol's promises: nothing of the
// device reaches the service before the service's MuxAnswer (writeGate),
// and nothing of the device is relayed before it accepted (answerReader);
// on a rejection the stream ends unpaired and the early data, which the
// device discards, was never delivered to an accepted stream.

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/wire"
)

// errRefused is what the relay's writes to a service's stream get once
// the device did not accept it: the hub answers the service itself.
var errRefused = errors.New("stream not accepted")

// Gate states.
const (
	gateWaiting = iota
	gateOpen
	gateRefused
)

// writeGate is a service's session stream whose writes wait until the
// service was answered: open once its MuxAnswer went out, refused when the
// stream was not accepted. Until open, closing it leaves the stream to the
// answer and only wakes its reader.
type writeGate struct {
	net.Conn
	used atomic.Bool // the stream was pushed with its early data
	// inv is the stream's invocation, whose result the device's
	// acceptance records before the service is answered.
	inv *invocation
	// race is who decides a pushed stream: raceAccepted once the device's
	// acceptance is answered to the service, raceGaveUp once the hub
	// stopped waiting for it; the first wins.
	race atomic.Int32

	mu       sync.Mutex
	state    int
	deadline time.Time // of writes
	decided  chan struct{}
	wake     chan struct{} // the write deadline changed

	// told is closed once the stream's answer to the service is known
	// (its stream-log result recorded): a stream the device rejected
	// must not end in the relay before, or the relay would report it
	// first, as one the device never answered.
	told     chan struct{}
	toldOnce sync.Once
}

// Outcomes of writeGate.race.
const (
	raceOpen = iota
	raceAccepted
	raceGaveUp
)

// acceptEarly answers the service that the device accepted stream id and
// opens the gate, from the relay's goroutine that read the device's
// answer: the service hears it without a hand-off to the stream request's
// goroutine. The answer is recorded before the service has it, so that
// the stream's record, written once it ends, never finds it unanswered.
// It reports false when the hub gave up on the device first (the stream
// request answers the service), or the answer could not be written.
func (g *writeGate) acceptEarly(id string) bool {
	if !g.race.CompareAndSwap(raceOpen, raceAccepted) {
		return false
	}
	g.inv.answer(http.StatusOK, wire.ResultAccepted)
	g.answered()
	g.Conn.SetWriteDeadline(time.Now().Add(muxWriteTimeout))
	err := wire.WriteMuxHeader(g.Conn, wire.MuxAnswer{Status: http.StatusOK, Accepted: true, StreamID: id})
	if err != nil || !g.decide(gateOpen) {
		g.decide(gateRefused)
		g.Conn.Close()
		return false
	}
	return true
}

func newWriteGate(c net.Conn) *writeGate {
	return &writeGate{Conn: c, decided: make(chan struct{}), wake: make(chan struct{}, 1), told: make(chan struct{})}
}

// answered says the stream's answer to the service is known.
func (g *writeGate) answered() {
	g.toldOnce.Do(func() { close(g.told) })
}

// decide opens or refuses the gate, once; it reports whether the gate is
// in the state asked for.
func (g *writeGate) decide(state int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == gateWaiting {
		g.state = state
		close(g.decided)
	}
	return g.state == state
}

// opened waits until the gate is decided and reports whether it opened.
func (g *writeGate) opened() bool {
	<-g.decided
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state == gateOpen
}

// wait waits until the gate is decided or the write deadline passes.
func (g *writeGate) wait() error {
	for {
		g.mu.Lock()
		state, deadline := g.state, g.deadline
		g.mu.Unlock()
		switch state {
		case gateOpen:
			return nil
		case gateRefused:
			return errRefused
		}
		var expired <-chan time.Time
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-g.decided:
		case <-g.wake:
		case <-expired:
			return os.ErrDeadlineExceeded
		}
	}
}

func (g *writeGate) Write(p []byte) (int, error) {
	if err := g.wait(); err != nil {
		return 0, err
	}
	return g.Conn.Write(p)
}

// SendWindow waits for the gate as Write does, then for the stream's send
// window: the relay reads no more for the service than it takes.
func (g *writeGate) SendWindow() (int, error) {
	if err := g.wait(); err != nil {
		return 0, err
	}
	if w, ok := g.Conn.(*yamux.Stream); ok {
		return w.SendWindow()
	}
	return math.MaxInt32, nil
}

func (g *writeGate) SetWriteDeadline(t time.Time) error {
	g.mu.Lock()
	g.deadline = t
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return g.Conn.SetWriteDeadline(t)
}

func (g *writeGate) SetDeadline(t time.Time) error {
	g.SetWriteDeadline(t)
	return g.Conn.SetReadDeadline(t)
}

// Close closes the stream once the gate is open. Before, the relay is done
// with a stream the device did not take: the answer's writer owns it, and
// only the relay's read of it is woken.
func (g *writeGate) Close() error {
	if g.decide(gateRefused) {
		return g.Conn.SetReadDeadline(time.Now())
	}
	return g.Conn.Close()
}

// answerReader is the device's side of an early stream: its first read
// reads the device's MuxAnswer, hands it to the pusher and refuses the
// service's gate unless it accepted; the device's frames follow once the
// gate opened, never after a rejection.
type answerReader struct {
	*yamux.Stream
	svc      *writeGate
	id       string          // the stream's, for the service's answer
	answered chan pushResult // the answer, once
	once     sync.Once
	err      error // after the answer: why nothing follows
	at       atomic.Pointer[time.Time]
}

// pushResult is the device's answer to a pushed stream.
type pushResult struct {
	status int
	err    error
}

func (a *answerReader) Read(p []byte) (int, error) {
	a.once.Do(func() {
		var ans wire.MuxAnswer
		err := wire.ReadMuxHeader(a.Stream, &ans)
		switch {
		case err != nil:
			a.err = err
		case ans.Status != http.StatusOK:
			a.err = fmt.Errorf("%w by the device: %d", errRefused, ans.Status)
		default:
			now := time.Now()
			a.at.Store(&now)
			a.Stream.SetReadDeadline(time.Time{})
			if !a.svc.acceptEarly(a.id) {
				a.err = errRefused
			}
		}
		if a.err != nil {
			a.svc.decide(gateRefused)
		}
		a.answered <- pushResult{ans.Status, err}
		if a.err != nil {
			<-a.svc.told
		}
	})
	if a.err != nil {
		return 0, a.err
	}
	// Nothing of the device, its close frame included, is relayed before
	// the service has its answer.
	if !a.svc.opened() {
		return 0, errRefused
	}
	return a.Stream.Read(p)
}

// accepted is the relay's question: did the device accept, and when.
func (a *answerReader) accepted() (time.Time, bool) {
	if at := a.at.Load(); at != nil {
		return *at, true
	}
	return time.Time{}, false
}
