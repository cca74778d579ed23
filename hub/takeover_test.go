package hub

import (
	"fmt"
	"testing"
	"time"
)

// A device's takeover warnings come at most once a minute, the next one
// saying how many were held back; each device has its own minute, and
// the table forgets the quiet ones.
func TestTakeoverWarningsPerDevice(t *testing.T) {
	s := &Server{}
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	allow := func(id string, d time.Duration, wantOK bool, wantSuppressed int) {
		t.Helper()
		ok, n := s.allowTakeoverWarning(id, at.Add(d))
		if ok != wantOK || n != wantSuppressed {
			t.Fatalf("%s at +%v: %v, %d suppressed; want %v, %d", id, d, ok, n, wantOK, wantSuppressed)
		}
	}
	allow("dev1", 0, true, 0)
	allow("dev1", time.Second, false, 0)
	allow("dev1", 59*time.Second, false, 0)
	allow("dev2", 59*time.Second, true, 0) // another device: its own minute
	allow("dev1", time.Minute, true, 2)
	allow("dev1", time.Minute+time.Second, false, 0)

	for i := range 2000 {
		s.allowTakeoverWarning(fmt.Sprintf("d%d", i), at.Add(time.Duration(i)*time.Second))
	}
	if n := len(s.takeoverLog); n > 1100 {
		t.Fatalf("%d devices remembered", n)
	}
}
