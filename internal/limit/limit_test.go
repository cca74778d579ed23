package limit

import (
	"strconv"
	"testing"
	"time"
)

func TestSource(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:4242":            "192.0.2.7",
		"192.0.2.7":                 "192.0.2.7",
		"[::ffff:192.0.2.7]:1":      "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::/64",
		"[2001:db8:1:2::9]:80":      "2001:db8:1:2::/64",
		"[fe80::1%eth0]:80":         "fe80::/64",
		"not an address":            "not an address",
		"":                          "",
	} {
		if got := Source(in); got != want {
			t.Errorf("Source(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSourcesConns(t *testing.T) {
	s := NewSources(2, 0, 0)
	r1, over1 := s.Open("a")
	r2, over2 := s.Open("a")
	r3, over3 := s.Open("a")
	if over1 || over2 || !over3 {
		t.Fatalf("over = %v %v %v, want false false true", over1, over2, over3)
	}
	if _, over := s.Open("b"); over {
		t.Fatal("another source counted against a")
	}
	r3()
	r3() // a second release changes nothing
	r2()
	if r, over := s.Open("a"); over {
		t.Fatal("a is over after releasing")
	} else {
		r()
	}
	r1()
}

func TestSourcesRate(t *testing.T) {
	s := NewSources(0, 1, 3)
	for i := range 3 {
		if !s.Allow("a") {
			t.Fatalf("attempt %d within the burst refused", i)
		}
	}
	if s.Allow("a") {
		t.Fatal("attempt past the burst allowed")
	}
	if !s.Allow("b") {
		t.Fatal("another source refused")
	}
	if !NewSources(0, 0, 0).Allow("a") {
		t.Fatal("no rate limit refused")
	}
}

// TestSourcesBounded: a spray of sources never grows the table past its
// bound, and quiet entries are swept.
func TestSourcesBounded(t *testing.T) {
	s := NewSources(10, 1000, 1)
	for i := range 3 * sweepFloor {
		r, _ := s.Open(strconv.Itoa(i))
		r()
	}
	// The entries are fresh, so none could be swept yet: the table
	// doubled instead.
	if n := s.Len(); n != 3*sweepFloor {
		t.Fatalf("%d entries, want %d", n, 3*sweepFloor)
	}
	s.mu.Lock()
	for _, e := range s.m {
		e.seen = e.seen.Add(-time.Hour)
	}
	s.mu.Unlock()
	// New sources grow the table to its next sweep, which drops the old.
	for i := 0; s.Len() >= 3*sweepFloor; i++ {
		if i > 4*sweepFloor {
			t.Fatalf("no sweep after %d new sources: %d entries", i, s.Len())
		}
		s.Allow("new" + strconv.Itoa(i))
	}
	if n := s.Len(); n > sweepFloor+1 {
		t.Fatalf("%d entries after a sweep", n)
	}
}

func TestBackoff(t *testing.T) {
	b := NewBackoff(2, time.Second, 4*time.Second)
	now := time.Unix(1_000_000, 0)
	for i := range 2 {
		if d := b.Failed("a", now); d != 0 {
			t.Fatalf("free failure %d backs off %v", i, d)
		}
	}
	if w := b.Wait("a", now); w != 0 {
		t.Fatalf("wait %v after free failures", w)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}
	for i, w := range want {
		if d := b.Failed("a", now); d != w {
			t.Fatalf("failure %d: back-off %v, want %v", i+3, d, w)
		}
		if got := b.Wait("a", now.Add(w/2)); got != w/2 {
			t.Fatalf("wait %v, want %v", got, w/2)
		}
		if got := b.Wait("a", now.Add(w)); got != 0 {
			t.Fatalf("still waiting at the end of the back-off: %v", got)
		}
		if b.Wait("b", now) != 0 {
			t.Fatal("another source waits")
		}
	}
	b.Succeeded("a")
	if d := b.Failed("a", now); d != 0 {
		t.Fatalf("back-off %v after a success", d)
	}
	// Failures long ago are forgotten.
	b.Failed("c", now)
	b.Failed("c", now)
	if d := b.Failed("c", now.Add(time.Hour)); d != 0 {
		t.Fatalf("back-off %v for a failure after an hour's quiet", d)
	}
	off := NewBackoff(-1, time.Second, time.Second)
	for range 10 {
		off.Failed("a", now)
	}
	if off.Wait("a", now) != 0 {
		t.Fatal("a disabled back-off refuses")
	}
}

// TestRateBackoff: a source may fail at its rate for ever and is backed
// off only past it; while refused nothing refills, so a source that keeps
// failing as fast backs off twice as long each time, and one that calmed
// down starts again from the base. Successes change nothing.
func TestRateBackoff(t *testing.T) {
	b := NewRateBackoff(10, 5, time.Second, 4*time.Second)
	now := time.Unix(1_000_000, 0)
	// Within the rate: 10 a second for a minute, never refused.
	for i := range 600 {
		at := now.Add(time.Duration(i) * 100 * time.Millisecond)
		if d := b.Failed("nat", at); d != 0 {
			t.Fatalf("failure %d at the rate: back-off %v", i, d)
		}
	}
	// Past the burst at once: refused for the base.
	for i := range 5 {
		if d := b.Failed("a", now); d != 0 {
			t.Fatalf("failure %d of the burst: back-off %v", i, d)
		}
	}
	b.Succeeded("a") // one client's success does not excuse the others
	if d := b.Failed("a", now); d != time.Second {
		t.Fatalf("past the burst: back-off %v, want 1s", d)
	}
	if w := b.Wait("a", now.Add(time.Second/2)); w != time.Second/2 {
		t.Fatalf("wait %v, want 500ms", w)
	}
	// A failure that was under way when the back-off began adds nothing.
	if d := b.Failed("a", now.Add(time.Second/2)); d != time.Second/2 {
		t.Fatalf("failure during the back-off: %v, want the 500ms left", d)
	}
	// Failing on as fast after each back-off: each is twice the last.
	at := now
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second, 4 * time.Second} {
		at = b.nextFree("a", at)
		if d := b.Failed("a", at); d != want {
			t.Fatalf("failing on at once: back-off %v, want %v", d, want)
		}
	}
	// Quiet for long enough to refill: the burst again, then the base.
	at = at.Add(4*time.Second + time.Second)
	for i := range 5 {
		if d := b.Failed("a", at); d != 0 {
			t.Fatalf("failure %d after calming down: back-off %v", i, d)
		}
	}
	if d := b.Failed("a", at); d != time.Second {
		t.Fatalf("past the burst after calming down: back-off %v, want 1s", d)
	}
	if b.Wait("b", now) != 0 {
		t.Fatal("another source waits")
	}
	off := NewRateBackoff(0, 5, time.Second, time.Second)
	for range 100 {
		off.Failed("a", now)
	}
	if off.Wait("a", now) != 0 {
		t.Fatal("a disabled back-off refuses")
	}
}

// nextFree is the end of src's back-off.
func (b *Backoff) nextFree(src string, now time.Time) time.Time {
	return now.Add(b.Wait(src, now))
}
