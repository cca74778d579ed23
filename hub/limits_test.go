package hub

import (
	"testing"
	"time"
)

func TestLimitsResolve(t *testing.T) {
	d := DefaultLimits()
	if got := (Limits{}).resolve(); got != d {
		t.Fatalf("zero Limits resolve to %+v, want the defaults %+v", got, d)
	}
	got := Limits{StreamsPerDevice: 7, StreamRate: -1, MaxBodyBytes: -5, StreamIdleTimeout: time.Minute, TLSHandshakeTimeout: -1}.resolve()
	if got.StreamsPerDevice != 7 || got.StreamRate != -1 || got.MaxBodyBytes != -1 ||
		got.StreamIdleTimeout != time.Minute || got.TLSHandshakeTimeout != -1 || got.StreamsPerHub != d.StreamsPerHub {
		t.Fatalf("resolved %+v", got)
	}
	if d.StreamIdleTimeout != 0 {
		t.Fatal("the idle timeout is on by default")
	}
}
