package device

import (
	"context"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-io/tether/device/devicetest"
)

// The defaults must suit a hub node that comes back with many devices:
// full jitter from the first attempt and a cap of about 30 s.
func TestBackoffDefaults(t *testing.T) {
	const base = time.Second // Dial's default MinBackoff
	top := func(n int64) int64 { return n - 1 }
	if got := backoff(0, base, DefaultMaxBackoff, top); got != base {
		t.Errorf("first attempt waits up to %v, want %v", got, base)
	}
	if got := backoff(0, base, DefaultMaxBackoff, func(int64) int64 { return 0 }); got != 0 {
		t.Errorf("first attempt waits at least %v, want 0 (full jitter)", got)
	}
	for n := 5; n < 70; n++ { // 1s·2⁵ = 32s: capped from here on
		if got := backoff(n, base, DefaultMaxBackoff, top); got != DefaultMaxBackoff {
			t.Fatalf("attempt %d waits up to %v, want the cap %v", n, got, DefaultMaxBackoff)
		}
	}
	if DefaultMaxBackoff < 20*time.Second || DefaultMaxBackoff > 40*time.Second {
		t.Errorf("DefaultMaxBackoff = %v, want about 30 s", DefaultMaxBackoff)
	}
	// 10,000 devices reconnecting at the cap spread evenly: no second of
	// the window gets much more than its share.
	const n = 10_000
	var perSecond [31]int
	for range n {
		perSecond[backoff(40, base, DefaultMaxBackoff, rand.Int64N)/time.Second]++
	}
	for s, c := range perSecond[:30] {
		if c > 2*n/30 {
			t.Errorf("second %d of the window got %d of %d reconnects", s, c, n)
		}
	}
}

func TestAttemptAfterLoss(t *testing.T) {
	const maxB = 30 * time.Second
	for _, tc := range []struct {
		attempt int
		up      time.Duration
		want    int
	}{
		{0, time.Hour, 0},
		{7, maxB, 0},               // healthy long enough: start afresh
		{7, time.Hour, 0},          // idem
		{7, maxB - time.Second, 7}, // kicked out soon after connecting: keep growing
		{7, 0, 7},
	} {
		if got := attemptAfterLoss(tc.attempt, tc.up, maxB); got != tc.want {
			t.Errorf("attemptAfterLoss(%d, %v) = %d, want %d", tc.attempt, tc.up, got, tc.want)
		}
	}
}

// A hub name that stops resolving (a DNS outage, a device whose network
// comes up late) is retried like any other failure, and the client comes
// back once it resolves again.
func TestReconnectRetriesDNSFailure(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		key := devicetest.NewKey()
		b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
		opts, logs := testOptions(t, b, tr)
		var failDNS atomic.Bool
		failed := make(chan struct{}, 16)
		opts.dial = func(ctx context.Context, real func(context.Context) (net.Conn, error)) (net.Conn, error) {
			if failDNS.Load() {
				select {
				case failed <- struct{}{}:
				default:
				}
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "hub.example", IsNotFound: true}}
			}
			return real(ctx)
		}
		ctx, cancel := context.WithTimeout(context.Background(), devicetest.Timeout)
		defer cancel()
		c, err := Dial(ctx, b.ConnStr(key), opts)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b.NextConnect()

		failDNS.Store(true)
		b.Stop()
		waitFor(t, "Connected() to turn false", func() bool { return !c.Connected() })
		b2 := devicetest.StartHub(t, key, b.TLSAddr, b.HTTPAddr)
		for range 3 { // three failed attempts in a row, then the name resolves
			select {
			case <-failed:
			case <-ctx.Done():
				t.Fatal("the client stopped retrying after a DNS failure")
			}
		}
		failDNS.Store(false)
		waitFor(t, "Connected() to turn true", c.Connected)
		b2.NextConnect()
		// The reconnect is logged just after Connected() turns true.
		waitFor(t, "the log to show the DNS failure and the reconnect", func() bool {
			out := logs.String()
			return strings.Contains(out, "no such host") && strings.Contains(out, "reconnected to hub")
		})
	})
}
