package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"testing"
	"time"
)

// startTestLink starts a WAN link, or skips the test where it cannot (not
// root, no /dev/net/tun, no network namespaces). Unlike the outside
// programs .ci/run installs, a kernel's devices cannot be installed, so
// TETHER_E2E_REQUIRE does not turn this skip into a failure.
func startTestLink(t *testing.T, cfg WANLinkConfig) *WANLink {
	t.Helper()
	skip := func(why string) {
		t.Skipf("the WAN link needs root, /dev/net/tun and network namespaces: %s", why)
	}
	if os.Geteuid() != 0 {
		skip("not root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		skip(err.Error())
	}
	l, err := StartWANLink(cfg)
	if err != nil {
		skip(err.Error())
	}
	t.Cleanup(l.Close)
	return l
}

// TestWANLink checks the link's shape from what TCP across it sees: a
// round trip of twice the delay, and one connection's rate near the
// bottleneck's, which it reaches only if its window covers the link's
// bandwidth-delay product.
func TestWANLink(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds of bulk transfer")
	}
	const rate = 100e6
	l := startTestLink(t, WANLinkConfig{Delay: 25 * time.Millisecond, Rate: rate})
	var target *Target
	err := l.InPeer(func() error {
		var err error
		target, err = StartTarget(net.JoinHostPort(l.PeerAddr.String(), "0"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	_, port, _ := net.SplitHostPort(target.Addr())
	dial := TCPDialer(net.JoinHostPort(l.PeerAddr.String(), port))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c, err := open(ctx, dial, ModeEcho)
	if err != nil {
		t.Fatal(err)
	}
	var rtts []time.Duration
	b := []byte{1}
	for range 10 {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		rtts = append(rtts, time.Since(t0))
	}
	c.Close()
	slices.Sort(rtts)
	// Bounds a loaded machine cannot break: the delay is a floor, the
	// bottleneck a ceiling. How near them the link comes is the
	// benchmark's to report (bench/run.sh -only wanbulk), not a test's.
	if rtts[0] < 50*time.Millisecond {
		t.Errorf("a round trip of %v across a link of 25 ms each way, want at least 50 ms (all: %v)", rtts[0], rtts)
	}

	gbps, err := Bulk(ctx, dial, target, false, 1500*time.Millisecond, 3*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	// IP and TCP headers take 52 of each 1,500 bytes: 96.5% at best.
	if got := gbps * 1e9; got <= 0 || got > 1.05*rate {
		t.Errorf("one connection moved %.1f Mbit/s across a link of %.0f Mbit/s, want more than 0 and no more than the link (%d packets dropped)",
			got/1e6, rate/1e6, l.Dropped.Load())
	}
	t.Logf("round trip %v (min %v), rate %.1f Mbit/s, %d packets dropped", rtts[len(rtts)/2], rtts[0], gbps*1e3, l.Dropped.Load())
}

// TestWANLinkErrors checks that a link of a negative shape is refused.
func TestWANLinkErrors(t *testing.T) {
	for _, cfg := range []WANLinkConfig{{Delay: -1}, {Rate: -1}, {Queue: -1}} {
		if _, err := StartWANLink(cfg); err == nil || errors.Is(err, os.ErrNotExist) {
			t.Errorf("StartWANLink(%+v) = %v, want an error about the shape", cfg, err)
		}
	}
}
