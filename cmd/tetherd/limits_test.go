package main

import (
	"io"
	"testing"
	"time"

	"github.com/tether-io/tether/hub"
)

// TestLimitFlags: every limit defaults to the hub's default, takes a flag
// or an environment variable (the flag wins), and is off at 0.
func TestLimitFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.limits != hub.DefaultLimits() {
		t.Fatalf("defaults %+v, want %+v", c.limits, hub.DefaultLimits())
	}
	t.Setenv("TETHER_MAX_STREAMS_PER_DEVICE", "7")
	t.Setenv("TETHER_STREAM_RATE", "2.5")
	t.Setenv("TETHER_STREAM_IDLE_TIMEOUT", "5m")
	t.Setenv("TETHER_MAX_BODY_BYTES", "1000")
	c, err = parseFlags([]string{"--max-body-bytes", "2000", "--mqtt-conns-per-source", "0", "--tls-handshake-timeout", "3s", "--header-timeout", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	l := c.limits
	if l.StreamsPerDevice != 7 || l.StreamRate != 2.5 || l.StreamIdleTimeout != 5*time.Minute ||
		l.MaxBodyBytes != 2000 || l.MQTTConnsPerSource != -1 || l.TLSHandshakeTimeout != 3*time.Second ||
		l.HeaderTimeout != -1 {
		t.Fatalf("limits %+v", l)
	}
	t.Setenv("TETHER_MAX_STREAMS", "lots")
	if _, err := parseFlags(nil, io.Discard); err == nil {
		t.Fatal("a bad TETHER_MAX_STREAMS was accepted")
	}
}
