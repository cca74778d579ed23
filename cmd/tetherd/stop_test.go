package main

import (
	"bufio"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// stopAfterDrain bounds what tetherd does on SIGTERM once the drain is
// over: the HTTP server's shutdown (10 s in run), the hub's close, then
// the store's: NATS drains the connection (nats.DefaultDrainTimeout at
// most) and JetStream flushes to disk (a few seconds, 10 s allowed).
const stopAfterDrain = 10*time.Second + nats.DefaultDrainTimeout + 10*time.Second

var (
	spanPart     = regexp.MustCompile(`(\d+)\s*([a-z]*)`)
	drainSetting = regexp.MustCompile(`(?:TETHER_DRAIN_TIMEOUT=|--drain-timeout[= ])(\S+)`)
)

// systemdSpan parses a systemd time span as units use it: "90s", "2min",
// "1min 30s", or a bare number of seconds.
func systemdSpan(t *testing.T, v string) time.Duration {
	t.Helper()
	var total time.Duration
	for _, m := range spanPart.FindAllStringSubmatch(v, -1) {
		unit := map[string]string{"": "s", "s": "s", "sec": "s", "ms": "ms", "m": "m", "min": "m", "h": "h", "hr": "h"}[m[2]]
		if unit == "" {
			t.Fatalf("time span %q: unit %q not understood", v, m[2])
		}
		d, err := time.ParseDuration(m[1] + unit)
		if err != nil {
			t.Fatal(err)
		}
		total += d
	}
	if total == 0 {
		t.Fatalf("time span %q is empty", v)
	}
	return total
}

// TestSystemdUnitOutlastsTheStop: systemd kills the hub TimeoutStopSec
// after SIGTERM. That must cover the drain (the flag's default, or what
// the unit sets) and closing the store after it, or a stop kills the hub
// before its store is flushed.
func TestSystemdUnitOutlastsTheStop(t *testing.T) {
	t.Setenv("TETHER_DRAIN_TIMEOUT", "")
	os.Unsetenv("TETHER_DRAIN_TIMEOUT")
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	drain := c.cluster.drainTimeout

	f, err := os.Open("../../deploy/tetherd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stop time.Duration
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		switch key {
		case "TimeoutStopSec", "TimeoutSec":
			stop = systemdSpan(t, val)
		case "Environment", "ExecStart":
			// A drain timeout the unit sets wins over the default.
			if m := drainSetting.FindStringSubmatch(val); m != nil {
				if drain, err = time.ParseDuration(m[1]); err != nil {
					t.Fatalf("%s: %v", key, err)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if stop == 0 {
		t.Fatal("deploy/tetherd.service sets no TimeoutStopSec: systemd's default (90 s) would apply unsaid")
	}
	if need := drain + stopAfterDrain; stop < need {
		t.Errorf("TimeoutStopSec is %v: systemd kills the hub before a drain of %v and closing its store (%v) are over; want at least %v", stop, drain, stopAfterDrain, need)
	}
}
