package registry

import (
	"errors"
	"testing"

	"github.com/tether-io/tether/wire"
)

// TestStatus: Status follows every change of the record, each read from
// the registry (a disable, an enable, a delete, a re-creation), whether
// or not the revision read was decoded before; a bad id or a record the
// registry never held is an error.
func TestStatus(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	want := func(id, status string) {
		t.Helper()
		for range 2 { // the second read is of a revision already decoded
			got, err := r.Status(ctx, id)
			if err != nil || got != status {
				t.Fatalf("Status(%s) = %q, %v; want %q", id, got, err, status)
			}
		}
	}
	d := mustPut(t, r, wire.Device{DeviceID: "dev1"}, "")
	want("dev1", wire.StatusEnabled)
	d.Status = wire.StatusDisabled
	d = mustPut(t, r, d, d.ETag)
	want("dev1", wire.StatusDisabled)
	d.Status = wire.StatusEnabled
	mustPut(t, r, d, d.ETag)
	want("dev1", wire.StatusEnabled)

	if err := r.Delete(ctx, "dev1", "*"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Status(ctx, "dev1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Status of a deleted device: %v, want ErrNotFound", err)
	}
	mustPut(t, r, wire.Device{DeviceID: "dev1", Status: wire.StatusDisabled}, "")
	want("dev1", wire.StatusDisabled)

	if _, err := r.Status(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status of an unknown device: %v, want ErrNotFound", err)
	}
	if _, err := r.Status(ctx, "bad id/"); err == nil {
		t.Error("Status of an invalid id: no error")
	}
}

// TestStatusCacheBound: the cache starts again empty past its bound, and
// an entry answers only for the revision it was decoded at.
func TestStatusCacheBound(t *testing.T) {
	var c statusCache
	c.put("a", 7, wire.StatusDisabled)
	if st, ok := c.get("a", 7); !ok || st != wire.StatusDisabled {
		t.Fatalf("get at the revision put: %q %v", st, ok)
	}
	if _, ok := c.get("a", 8); ok {
		t.Fatal("an entry answered for another revision")
	}
	for i := range maxStatuses {
		c.put(string(rune(i)), 1, wire.StatusEnabled)
	}
	if len(c.m) > maxStatuses {
		t.Fatalf("%d entries, bound %d", len(c.m), maxStatuses)
	}
	c.forget("a")
	if _, ok := c.get("a", 7); ok {
		t.Fatal("a forgotten entry answered")
	}
}
