package registry

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/wire"
)

// fakeClock is a registry's clock that a test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestTakeovers: a device's takeovers are counted over the last hour and
// shown with the last one's two addresses; a connect keeps them, a
// client's document cannot set them, and a record stays small however
// often they happen.
func TestTakeovers(t *testing.T) {
	r := newRegistry(t)
	clock := &fakeClock{t: time.Date(2026, 5, 1, 10, 0, 30, 0, time.UTC)}
	r.now = clock.now
	ctx := t.Context()
	mustPut(t, r, wire.Device{DeviceID: "dev"}, "")
	get := func() *wire.Takeovers {
		t.Helper()
		d, err := r.Get(ctx, "dev")
		if err != nil {
			t.Fatal(err)
		}
		return d.Takeovers
	}
	record := func(displaced, by string, want int) {
		t.Helper()
		n, err := r.RecordTakeover(ctx, "dev", displaced, by)
		if err != nil || n != want {
			t.Fatalf("RecordTakeover = %d, %v; want %d", n, err, want)
		}
	}

	// No presence yet: nothing to count against, nothing created.
	record("10.0.0.1:1", "10.0.0.2:2", 0)
	if tk := get(); tk != nil {
		t.Fatalf("takeovers of a device never connected: %+v", *tk)
	}
	if err := r.SetConnected(ctx, "dev", "n/1", true); err != nil {
		t.Fatal(err)
	}
	if tk := get(); tk != nil {
		t.Fatalf("takeovers before any: %+v", *tk)
	}

	record("10.0.0.1:1", "10.0.0.2:2", 1)
	// The new session's connect comes after its takeover, and keeps it.
	if err := r.SetConnected(ctx, "dev", "n/2", true); err != nil {
		t.Fatal(err)
	}
	want := wire.Takeovers{LastHour: 1, Last: clock.now(), DisplacedRemote: "10.0.0.1:1", ByRemote: "10.0.0.2:2"}
	if tk := get(); tk == nil || *tk != want {
		t.Fatalf("after a takeover and the connect: %+v, want %+v", tk, want)
	}

	clock.add(30 * time.Minute)
	record("10.0.0.2:2", "10.0.0.1:3", 2)
	clock.add(31 * time.Minute) // the first is more than an hour old
	if tk := get(); tk.LastHour != 1 || tk.DisplacedRemote != "10.0.0.2:2" || tk.ByRemote != "10.0.0.1:3" {
		t.Fatalf("an hour after the first: %+v", *tk)
	}
	clock.add(2 * time.Hour) // none in the last hour; the last one still shows
	if tk := get(); tk.LastHour != 0 || tk.ByRemote != "10.0.0.1:3" || tk.Last.IsZero() {
		t.Fatalf("hours later: %+v", *tk)
	}
	record("a", "b", 1)

	// Twins without back-off: thousands an hour, a record of fixed size.
	for range 3000 {
		clock.add(time.Second)
		if _, err := r.RecordTakeover(ctx, "dev", "a", "b"); err != nil {
			t.Fatal(err)
		}
	}
	if tk := get(); tk.LastHour != 3001 {
		t.Fatalf("after 3001 takeovers in 50 minutes: %d in the last hour", tk.LastHour)
	}
	e, err := r.presence.Get(ctx, cluster.SubjectToken("dev"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(e.Value()); n > 1024 {
		t.Fatalf("presence record of %d bytes", n)
	}
	var p presence
	if err := json.Unmarshal(e.Value(), &p); err != nil || p.Session != "n/2" || p.State != wire.StateConnected {
		t.Fatalf("presence after the takeovers: %+v, %v", p, err)
	}

	// A client's document does not set them (a GET echoed into a PUT).
	d, err := r.Get(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	d.Takeovers = &wire.Takeovers{LastHour: 99}
	if _, _, err := r.Put(context.Background(), d, "*"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, r, wire.Device{DeviceID: "other", Takeovers: &wire.Takeovers{LastHour: 5}}, "")
	if d, err := r.Get(ctx, "other"); err != nil || d.Takeovers != nil {
		t.Fatalf("a created device's document set its takeovers: %+v, %v", d.Takeovers, err)
	}
	if d, err := r.Record(ctx, "other"); err != nil || d.Takeovers != nil {
		t.Fatalf("a created device's document stored its takeovers: %+v, %v", d.Takeovers, err)
	}
	if tk := get(); tk.LastHour != 3001 {
		t.Fatalf("after a PUT: %d in the last hour", tk.LastHour)
	}
}

// The count of the last hour is per minute: a slot is cleared when its
// minute comes round again, and a clock set back counts in the newest.
func TestTakeoverLogMinutes(t *testing.T) {
	var l takeoverLog
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	l.add(at, 1, "a", "b")
	l.add(at.Add(59*time.Second), 1, "a", "b")
	if n := l.lastHour(at.Add(59 * time.Minute)); n != 2 {
		t.Fatalf("59 minutes on: %d, want 2", n)
	}
	if n := l.lastHour(at.Add(60 * time.Minute)); n != 0 {
		t.Fatalf("60 minutes on: %d, want 0", n)
	}
	l.add(at.Add(60*time.Minute), 1, "a", "b") // the same slot, an hour later
	if n := l.lastHour(at.Add(60 * time.Minute)); n != 1 {
		t.Fatalf("a takeover an hour after two: %d in the last hour, want 1", n)
	}
	l.add(at.Add(30*time.Minute), 1, "a", "b") // the clock went back
	if n := l.lastHour(at.Add(60 * time.Minute)); n != 2 {
		t.Fatalf("after a clock set back: %d, want 2", n)
	}
	l.add(at.Add(5*time.Hour), 1, "a", "b")
	if n := l.lastHour(at.Add(5 * time.Hour)); n != 1 {
		t.Fatalf("hours later: %d, want 1", n)
	}
}

// Takeovers that came faster than a node could write them are counted at
// once, every one of them, with the last one's two addresses.
func TestRecordTakeoversAtOnce(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	mustPut(t, r, wire.Device{DeviceID: "dev"}, "")
	if err := r.SetConnected(ctx, "dev", "n/1", true); err != nil {
		t.Fatal(err)
	}
	if n, err := r.RecordTakeover(ctx, "dev", "10.0.0.1:1", "10.0.0.2:2"); n != 1 || err != nil {
		t.Fatalf("RecordTakeover = %d, %v; want 1", n, err)
	}
	if n, err := r.RecordTakeovers(ctx, "dev", 4, "10.0.0.3:3", "10.0.0.4:4"); n != 5 || err != nil {
		t.Fatalf("RecordTakeovers of 4 = %d, %v; want 5 in the last hour", n, err)
	}
	d, err := r.Get(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if tk := d.Takeovers; tk == nil || tk.LastHour != 5 || tk.DisplacedRemote != "10.0.0.3:3" || tk.ByRemote != "10.0.0.4:4" {
		t.Fatalf("takeovers: %+v", tk)
	}
	if _, err := r.RecordTakeovers(ctx, "dev", 0, "a", "b"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("RecordTakeovers of 0: %v, want ErrInvalid", err)
	}
}

// TestDeviceClientType: the device's document shows what its latest
// connection named itself; a disconnect keeps it, a connect that names
// nothing clears it, and a client's document cannot set it.
func TestDeviceClientType(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	mustPut(t, r, wire.Device{DeviceID: "dev"}, "")
	shown := func() string {
		t.Helper()
		d, err := r.Get(ctx, "dev")
		if err != nil {
			t.Fatal(err)
		}
		l, err := r.List(ctx, 0)
		if err != nil || len(l) != 1 || l[0].DeviceClientType != d.DeviceClientType {
			t.Fatalf("List: %+v, %v; Get shows %q", l, err, d.DeviceClientType)
		}
		return d.DeviceClientType
	}
	if got := shown(); got != "" {
		t.Fatalf("never connected: %q", got)
	}
	if err := r.SetClientConnected(ctx, "dev", "n/1", "tether-go/0.3.0"); err != nil {
		t.Fatal(err)
	}
	if got := shown(); got != "tether-go/0.3.0" {
		t.Fatalf("connected: %q", got)
	}
	if err := r.SetConnected(ctx, "dev", "n/1", false); err != nil {
		t.Fatal(err)
	}
	if got := shown(); got != "tether-go/0.3.0" {
		t.Fatalf("after the disconnect: %q, want the last connection's", got)
	}

	// An edit of the document, with the field set, changes nothing.
	d, err := r.Get(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	d.DeviceClientType = "forged/1.0"
	mustPut(t, r, d, d.ETag)
	if got := shown(); got != "tether-go/0.3.0" {
		t.Fatalf("after a client's edit: %q", got)
	}

	if err := r.SetConnected(ctx, "dev", "n/2", true); err != nil {
		t.Fatal(err)
	}
	if got := shown(); got != "" {
		t.Fatalf("a connection naming nothing: %q", got)
	}
	if err := r.SetClientConnected(ctx, "dev", "n/3", string(make([]byte, wire.MaxClientType+1))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an overlong client type: %v, want ErrInvalid", err)
	}
	if got := shown(); got != "" {
		t.Fatalf("after the refused connect: %q", got)
	}
}
