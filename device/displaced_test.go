package device

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

// After each displacement in a row the wait doubles, from MaxBackoff up
// to the cap, and is never below half of its step: two twins cannot take
// turns faster than that.
func TestDisplacedDelay(t *testing.T) {
	const maxB, limit = 30 * time.Second, 10 * time.Minute
	low := func(int64) int64 { return 0 }
	high := func(n int64) int64 { return n - 1 }
	for _, tc := range []struct {
		n         int
		least, at time.Duration
	}{
		{1, 15 * time.Second, 30 * time.Second},
		{2, 30 * time.Second, time.Minute},
		{3, time.Minute, 2 * time.Minute},
		{5, 4 * time.Minute, 8 * time.Minute},
		{6, 5 * time.Minute, limit},
		{100, 5 * time.Minute, limit}, // no overflow
	} {
		if got := displacedDelay(tc.n, maxB, limit, low); got != tc.least {
			t.Errorf("displacement %d: shortest wait %v, want %v", tc.n, got, tc.least)
		}
		if got := displacedDelay(tc.n, maxB, limit, high); got != tc.at {
			t.Errorf("displacement %d: longest wait %v, want %v", tc.n, got, tc.at)
		}
	}
	// A MaxBackoff beyond the cap: the cap is MaxBackoff.
	if got := displacedDelay(3, time.Hour, time.Hour, high); got != time.Hour {
		t.Errorf("MaxBackoff 1h: wait %v, want 1h", got)
	}
}

// The count goes on while the twin keeps displacing, and starts again
// once none came for three of the longest waits.
func TestDisplacementsInARow(t *testing.T) {
	const limit = 10 * time.Minute
	if got := displacementsInARow(0, 1<<62, limit); got != 1 {
		t.Errorf("first displacement: %d in a row, want 1", got)
	}
	if got := displacementsInARow(4, 2*limit, limit); got != 5 {
		t.Errorf("twin still there: %d in a row, want 5", got)
	}
	if got := displacementsInARow(4, 3*limit+time.Second, limit); got != 1 {
		t.Errorf("after a quiet spell: %d in a row, want 1", got)
	}
}

// The hub's notice belongs to the session it arrives on and is no stream
// request; every other message still reaches the client.
func TestTakeoverNoticeMarksSession(t *testing.T) {
	c := &Client{requests: make(chan *Request, 1), log: slog.New(slog.DiscardHandler)}
	s := &session{lost: make(chan struct{})}
	on := s.onPublish(c)
	if _, ok := s.displaced(); ok {
		t.Fatal("a new session reports a displacement")
	}
	on(wire.TakenOverTopic("203.0.113.7:51234"))
	by, ok := s.displaced()
	if !ok || by != "203.0.113.7:51234" {
		t.Fatalf("displaced() = %q, %v; want 203.0.113.7:51234, true", by, ok)
	}
	if len(c.requests) != 0 {
		t.Fatal("the notice was queued as a stream request")
	}
	on("$iothub/streams/POST/ssh/?$rid=1&$url=wss%3A%2F%2Fh%2Fb&$auth=tok")
	if len(c.requests) != 1 {
		t.Fatal("a stream request after the notice was not queued")
	}
}

// A DISCONNECT from the hub ends the connection as a loss that says so,
// not as the EOF after it.
func TestHubDisconnectIsALoss(t *testing.T) {
	b, _, _, lost := connectFake(t, time.Minute, time.Second)
	b.write(pktDisconnect, nil)
	select {
	case err := <-lost:
		if !errors.Is(err, errHubDisconnect) {
			t.Fatalf("loss %v, want %v", err, errHubDisconnect)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no loss after the hub's DISCONNECT")
	}
}
