package hub

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	l := newLogLimiter(3, time.Second)
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if ok, s := l.allow(t0); !ok || s != 0 {
			t.Fatalf("line %d: %v %d", i, ok, s)
		}
	}
	for range 100 {
		if ok, _ := l.allow(t0.Add(500 * time.Millisecond)); ok {
			t.Fatal("a line past the burst went through")
		}
	}
	ok, s := l.allow(t0.Add(time.Second))
	if !ok || s != 100 {
		t.Fatalf("next interval: %v, suppressed %d; want true, 100", ok, s)
	}
	if ok, s := l.allow(t0.Add(time.Second)); !ok || s != 0 {
		t.Fatalf("suppressed count reported twice: %v %d", ok, s)
	}
}
