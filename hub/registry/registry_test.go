package registry

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startCluster runs an embedded cluster on dir until the test ends or
// the returned stop is called.
func startCluster(t testing.TB, dir string) (c *cluster.Cluster, stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{DataDir: dir, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

func openRegistry(t testing.TB, c *cluster.Cluster) *Registry {
	t.Helper()
	r, err := Open(context.Background(), c.JetStream(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newRegistry(t testing.TB) *Registry {
	c, _ := startCluster(t, t.TempDir())
	return openRegistry(t, c)
}

func mustPut(t *testing.T, r *Registry, d wire.Device, ifMatch string) wire.Device {
	t.Helper()
	got, _, err := r.Put(t.Context(), d, ifMatch)
	if err != nil {
		t.Fatalf("Put(%q, %q): %v", d.DeviceID, ifMatch, err)
	}
	return got
}

func validKey(t *testing.T, k string) {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil || len(b) != 32 {
		t.Errorf("key %q is not base64 of 32 bytes", k)
	}
}

func TestPutCreate(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	d, created, err := r.Put(ctx, wire.Device{DeviceID: "dev1"}, "")
	if err != nil || !created {
		t.Fatalf("Put = %v, created %v", err, created)
	}
	if d.Status != wire.StatusEnabled || d.Authentication.Type != "sas" || d.GenerationID == "" || d.ETag == "" {
		t.Fatalf("defaults not applied: %+v", d)
	}
	if d.StatusUpdatedTime.IsZero() {
		t.Error("statusUpdatedTime not set on create")
	}
	if d.ConnectionState != wire.StateDisconnect {
		t.Errorf("connectionState = %q", d.ConnectionState)
	}
	validKey(t, d.Authentication.SymmetricKey.PrimaryKey)
	validKey(t, d.Authentication.SymmetricKey.SecondaryKey)
	if d.Authentication.SymmetricKey.PrimaryKey == d.Authentication.SymmetricKey.SecondaryKey {
		t.Error("primary and secondary keys are equal")
	}

	got, err := r.Get(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if got.ETag != d.ETag || *got.Authentication.SymmetricKey != *d.Authentication.SymmetricKey || got.GenerationID != d.GenerationID {
		t.Fatalf("Get = %+v, Put returned %+v", got, d)
	}

	if _, _, err := r.Put(ctx, wire.Device{DeviceID: "dev1"}, ""); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	if _, err := r.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing: %v, want ErrNotFound", err)
	}
}

func TestPutGivenKeys(t *testing.T) {
	r := newRegistry(t)
	k1, k2 := base64.StdEncoding.EncodeToString(make([]byte, 32)), base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	d := mustPut(t, r, wire.Device{DeviceID: "d", Status: "Disabled", Authentication: wire.Authentication{
		SymmetricKey: &wire.SymmetricKey{PrimaryKey: k1, SecondaryKey: k2},
	}}, "")
	if d.Authentication.SymmetricKey.PrimaryKey != k1 || d.Authentication.SymmetricKey.SecondaryKey != k2 {
		t.Fatal("given keys not kept")
	}
	if d.Status != wire.StatusDisabled {
		t.Fatalf("status = %q", d.Status)
	}
	for _, bad := range []wire.Device{
		{DeviceID: "d2", Status: "paused"},
		{DeviceID: "d2", Authentication: wire.Authentication{Type: "password"}},
		{DeviceID: "d2", Authentication: wire.Authentication{SymmetricKey: &wire.SymmetricKey{PrimaryKey: "not base64!"}}},
		{DeviceID: "d2", Authentication: wire.Authentication{SymmetricKey: &wire.SymmetricKey{SecondaryKey: "c2hvcnQ="}}},
	} {
		if _, _, err := r.Put(t.Context(), bad, "*"); !errors.Is(err, ErrInvalid) {
			t.Errorf("Put(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := r.Get(t.Context(), "d2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rejected device stored: %v", err)
	}
}

func TestPutReplace(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	d1 := mustPut(t, r, wire.Device{DeviceID: "dev"}, "")

	// "*" replaces without an etag; keys and status not sent are kept.
	d2, created, err := r.Put(ctx, wire.Device{DeviceID: "dev", StatusReason: "x"}, "*")
	if err != nil || created {
		t.Fatalf("Put *: %v, created %v", err, created)
	}
	if d2.ETag == d1.ETag {
		t.Fatal("etag unchanged after a write")
	}
	if d2.GenerationID != d1.GenerationID {
		t.Fatal("generationId changed on update")
	}
	if *d2.Authentication.SymmetricKey != *d1.Authentication.SymmetricKey {
		t.Fatal("keys regenerated on an update that did not send them")
	}
	if d2.Status != wire.StatusEnabled || !d2.StatusUpdatedTime.Equal(d1.StatusUpdatedTime) {
		t.Fatalf("status or its time changed: %+v", d2)
	}

	// A stale etag is refused; the current one is taken.
	d2.Status = wire.StatusDisabled
	if _, _, err := r.Put(ctx, d2, d1.ETag); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("Put with stale etag: %v, want ErrPrecondition", err)
	}
	d3, created, err := r.Put(ctx, d2, `"`+d2.ETag+`"`) // HTTP quotes it
	if err != nil || created {
		t.Fatalf("Put with current etag: %v", err)
	}
	if d3.Status != wire.StatusDisabled || !d3.StatusUpdatedTime.After(d2.StatusUpdatedTime) {
		t.Fatalf("status change not recorded: %+v", d3)
	}

	// An etag on a device that does not exist.
	if _, _, err := r.Put(ctx, wire.Device{DeviceID: "ghost"}, d3.ETag); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Put etag on missing device: %v, want ErrNotFound", err)
	}
	// "*" creates.
	if _, created, err := r.Put(ctx, wire.Device{DeviceID: "ghost"}, "*"); err != nil || !created {
		t.Fatalf("Put * on missing device: %v, created %v", err, created)
	}
}

func TestDelete(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	d := mustPut(t, r, wire.Device{DeviceID: "a"}, "")
	d2 := mustPut(t, r, d, d.ETag)
	if err := r.Delete(ctx, "a", d.ETag); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("Delete with stale etag: %v", err)
	}
	if err := r.Delete(ctx, "a", d2.ETag); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx, "a", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Delete twice: %v", err)
	}
	if _, err := r.Get(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}

	// Re-created, it is a new device: new generation, new keys.
	d3 := mustPut(t, r, wire.Device{DeviceID: "a"}, "")
	if d3.GenerationID == d.GenerationID || d3.ETag == d2.ETag || *d3.Authentication.SymmetricKey == *d.Authentication.SymmetricKey {
		t.Fatal("re-created device shares generation, etag or keys with the deleted one")
	}
	if err := r.Delete(ctx, "a", "*"); err != nil {
		t.Fatal(err)
	}
}

func TestList(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	if l, err := r.List(ctx, 0); err != nil || len(l) != 0 {
		t.Fatalf("empty List = %v, %v", l, err)
	}
	ids := []string{"b", "a", "c.d", "C", "0", "z*", "a-1"}
	for _, id := range ids {
		mustPut(t, r, wire.Device{DeviceID: id}, "")
	}
	if err := r.Delete(ctx, "c.d", ""); err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == "c.d" })
	slices.Sort(want)

	all, err := r.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range all {
		got = append(got, d.DeviceID)
		if d.ETag == "" || d.ConnectionState == "" {
			t.Errorf("listed %q without etag or state", d.DeviceID)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	top, err := r.List(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(top) != 3 || top[0].DeviceID != want[0] || top[2].DeviceID != want[2] {
		t.Fatalf("List(3) = %v", top)
	}
}

func TestIDs(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	long := strings.Repeat("x", 128)
	weird := []string{"a.b", "*", "a.*", "-.+%_#*?!(),:=@$'", "x:y@z", "$SYS", "_kv", "(1)", "a=b", "'", long}
	for _, id := range weird {
		d := mustPut(t, r, wire.Device{DeviceID: id}, "")
		got, err := r.Get(ctx, id)
		if err != nil || got.DeviceID != id || got.ETag != d.ETag {
			t.Errorf("round trip of %q: %+v, %v", id, got, err)
		}
	}
	l, err := r.List(ctx, 0)
	if err != nil || len(l) != len(weird) {
		t.Fatalf("List: %d devices, %v", len(l), err)
	}
	for _, id := range weird {
		if err := r.Delete(ctx, id, "*"); err != nil {
			t.Errorf("Delete(%q): %v", id, err)
		}
	}

	for _, id := range []string{"", "a b", "a>b", "a/b", "ü", "a\x00", "a\nb", "a\"b", "a&b", long + "x"} {
		if _, _, err := r.Put(ctx, wire.Device{DeviceID: id}, "*"); !errors.Is(err, ErrInvalid) {
			t.Errorf("Put(%q) = %v, want ErrInvalid", id, err)
		}
		if _, err := r.Get(ctx, id); !errors.Is(err, ErrInvalid) {
			t.Errorf("Get(%q) = %v, want ErrInvalid", id, err)
		}
		if err := r.Delete(ctx, id, ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("Delete(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

func TestConcurrentPutSameETag(t *testing.T) {
	r := newRegistry(t)
	d := mustPut(t, r, wire.Device{DeviceID: "hot"}, "")
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			next := d
			next.StatusReason = fmt.Sprint("writer ", i)
			_, _, errs[i] = r.Put(context.Background(), next, d.ETag)
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrPrecondition):
			t.Errorf("loser got %v, want ErrPrecondition", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers won with the same etag, want 1", won)
	}
}

func TestConcurrentCreate(t *testing.T) {
	r := newRegistry(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, _, errs[i] = r.Put(context.Background(), wire.Device{DeviceID: "new"}, "") })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrExists):
			t.Errorf("loser got %v, want ErrExists", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creators won, want 1", won)
	}
}

func TestConcurrentReplaceAll(t *testing.T) {
	// "*" writers retry on conflict, so every one of them lands.
	r := newRegistry(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, _, errs[i] = r.Put(context.Background(), wire.Device{DeviceID: "star"}, "*") })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
}

func TestPresence(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	mustPut(t, r, wire.Device{DeviceID: "dev"}, "")
	state := func() wire.Device {
		t.Helper()
		d, err := r.Get(ctx, "dev")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	before := state()
	if before.ConnectionState != wire.StateDisconnect || !before.LastActivityTime.IsZero() {
		t.Fatalf("new device: %+v", before)
	}

	if err := r.SetConnected(ctx, "dev", "node-a/1", true); err != nil {
		t.Fatal(err)
	}
	d := state()
	if d.ConnectionState != wire.StateConnected || d.ConnectionStateUpdatedTime.IsZero() || d.LastActivityTime.IsZero() {
		t.Fatalf("after connect: %+v", d)
	}
	if d.ETag != before.ETag {
		t.Fatal("presence changed the device etag")
	}

	// The device moves to node b; node a notices the drop late.
	if err := r.SetConnected(ctx, "dev", "node-b/7", true); err != nil {
		t.Fatal(err)
	}
	if err := r.SetConnected(ctx, "dev", "node-a/1", false); err != nil {
		t.Fatal(err)
	}
	if d := state(); d.ConnectionState != wire.StateConnected {
		t.Fatal("a stale disconnect overwrote a newer connect")
	}
	l, err := r.List(ctx, 0)
	if err != nil || l[0].ConnectionState != wire.StateConnected {
		t.Fatalf("List: %+v, %v", l, err)
	}

	if err := r.SetConnected(ctx, "dev", "node-b/7", false); err != nil {
		t.Fatal(err)
	}
	d = state()
	if d.ConnectionState != wire.StateDisconnect || d.LastActivityTime.IsZero() {
		t.Fatalf("after disconnect: %+v", d)
	}

	// Disconnects of unknown devices or sessions do nothing.
	if err := r.SetConnected(ctx, "other", "s", false); err != nil {
		t.Fatal(err)
	}
	if err := r.SetConnected(ctx, "dev", "", true); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty session: %v", err)
	}

	// Deleting the device drops its presence.
	if err := r.SetConnected(ctx, "dev", "s2", true); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx, "dev", ""); err != nil {
		t.Fatal(err)
	}
	mustPut(t, r, wire.Device{DeviceID: "dev"}, "")
	if d := state(); d.ConnectionState != wire.StateDisconnect {
		t.Fatal("re-created device inherited the old presence")
	}
}

func TestPolicies(t *testing.T) {
	dir := t.TempDir()
	c, stop := startCluster(t, dir)
	r := openRegistry(t, c)
	ctx := t.Context()

	if _, err := r.Policy(ctx, "iothubowner"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("policy before Ensure: %v", err)
	}
	created, err := r.EnsureDefaultPolicies(ctx)
	if err != nil || !created {
		t.Fatalf("EnsureDefaultPolicies = %v, %v", created, err)
	}
	first, err := r.Policies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range first {
		names = append(names, p.Name)
		validKey(t, p.PrimaryKey)
		validKey(t, p.SecondaryKey)
	}
	if want := []string{"iothubowner", "registryRead", "registryReadWrite", "service"}; !slices.Equal(names, want) {
		t.Fatalf("policies %v, want %v", names, want)
	}
	owner, err := r.Policy(ctx, "iothubowner")
	if err != nil {
		t.Fatal(err)
	}
	for _, right := range []Right{RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect} {
		if !owner.Has(right) {
			t.Errorf("iothubowner lacks %s", right)
		}
	}
	svc, _ := r.Policy(ctx, "service")
	if !svc.Has(ServiceConnect) || svc.Has(RegistryRead) || svc.Has(RegistryWrite) {
		t.Errorf("service rights %v", svc.Rights)
	}
	rr, _ := r.Policy(ctx, "registryRead")
	if !rr.Has(RegistryRead) || rr.Has(RegistryWrite) || rr.Has(ServiceConnect) {
		t.Errorf("registryRead rights %v", rr.Rights)
	}
	rw, _ := r.Policy(ctx, "registryReadWrite")
	if !rw.Has(RegistryRead) || !rw.Has(RegistryWrite) || rw.Has(ServiceConnect) {
		t.Errorf("registryReadWrite rights %v", rw.Rights)
	}

	if created, err := r.EnsureDefaultPolicies(ctx); err != nil || created {
		t.Fatalf("second Ensure = %v, %v", created, err)
	}
	if again, _ := r.Policies(ctx); !slices.EqualFunc(first, again, policyEqual) {
		t.Fatal("second Ensure changed policies")
	}

	stop()
	c, _ = startCluster(t, dir)
	r = openRegistry(t, c)
	if created, err := r.EnsureDefaultPolicies(ctx); err != nil || created {
		t.Fatalf("Ensure after restart = %v, %v", created, err)
	}
	if again, _ := r.Policies(ctx); !slices.EqualFunc(first, again, policyEqual) {
		t.Fatal("restart changed policy keys")
	}
}

func policyEqual(a, b Policy) bool {
	return a.Name == b.Name && a.PrimaryKey == b.PrimaryKey && a.SecondaryKey == b.SecondaryKey && slices.Equal(a.Rights, b.Rights)
}

func TestEnsureDefaultPoliciesRace(t *testing.T) {
	// Two registries on one store stand in for two nodes starting at once.
	c, _ := startCluster(t, t.TempDir())
	regs := []*Registry{openRegistry(t, c), openRegistry(t, c)}
	var wg sync.WaitGroup
	errs := make([]error, len(regs))
	for i, r := range regs {
		wg.Go(func() { _, errs[i] = r.EnsureDefaultPolicies(context.Background()) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	a, _ := regs[0].Policies(t.Context())
	b, _ := regs[1].Policies(t.Context())
	if len(a) != 4 || !slices.EqualFunc(a, b, policyEqual) {
		t.Fatalf("nodes disagree on policies: %v vs %v", a, b)
	}
}

func TestRestartKeepsRegistry(t *testing.T) {
	dir := t.TempDir()
	c, stop := startCluster(t, dir)
	r := openRegistry(t, c)
	ctx := t.Context()
	d := mustPut(t, r, wire.Device{DeviceID: "keep.me", Status: wire.StatusDisabled}, "")
	if err := r.SetConnected(ctx, "keep.me", "s1", true); err != nil {
		t.Fatal(err)
	}
	stop()

	c, _ = startCluster(t, dir)
	r = openRegistry(t, c)
	got, err := r.Get(ctx, "keep.me")
	if err != nil {
		t.Fatal(err)
	}
	if got.ETag != d.ETag || got.GenerationID != d.GenerationID || got.Status != wire.StatusDisabled ||
		*got.Authentication.SymmetricKey != *d.Authentication.SymmetricKey {
		t.Fatalf("after restart %+v, before %+v", got, d)
	}
	// The etag from before the restart still works as a precondition.
	if _, _, err := r.Put(ctx, got, d.ETag); err != nil {
		t.Fatal(err)
	}
}

func TestOpenTwice(t *testing.T) {
	c, _ := startCluster(t, t.TempDir())
	r1 := openRegistry(t, c)
	mustPut(t, r1, wire.Device{DeviceID: "x"}, "")
	r2 := openRegistry(t, c)
	if _, err := r2.Get(t.Context(), "x"); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkGet(b *testing.B) {
	r := newRegistry(b)
	ctx := context.Background()
	if _, _, err := r.Put(ctx, wire.Device{DeviceID: "bench"}, ""); err != nil {
		b.Fatal(err)
	}
	if err := r.SetConnected(ctx, "bench", "s", true); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := r.Get(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestClearSessions(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	for id, session := range map[string]string{"a": "hub-old1/1", "b": "hub-new2/1", "c": "other-x/3"} {
		mustPut(t, r, wire.Device{DeviceID: id}, "")
		if err := r.SetConnected(ctx, id, session, true); err != nil {
			t.Fatal(err)
		}
	}
	mustPut(t, r, wire.Device{DeviceID: "d"}, "")
	n, err := r.ClearSessions(ctx, func(s string) bool { return strings.HasPrefix(s, "hub-old1/") })
	if err != nil || n != 1 {
		t.Fatalf("ClearSessions = %d, %v; want 1", n, err)
	}
	for id, want := range map[string]string{"a": wire.StateDisconnect, "b": wire.StateConnected, "c": wire.StateConnected, "d": wire.StateDisconnect} {
		d, err := r.Get(ctx, id)
		if err != nil || d.ConnectionState != want {
			t.Errorf("%s: %q, %v; want %s", id, d.ConnectionState, err, want)
		}
	}
	// A later connect of a cleared device is recorded as usual.
	if err := r.SetConnected(ctx, "a", "hub-new2/2", true); err != nil {
		t.Fatal(err)
	}
	if d, _ := r.Get(ctx, "a"); d.ConnectionState != wire.StateConnected {
		t.Fatal("connect after a clear not recorded")
	}
}

func TestTouch(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	mustPut(t, r, wire.Device{DeviceID: "dev"}, "")
	if err := r.SetConnected(ctx, "dev", "n-1/1", true); err != nil {
		t.Fatal(err)
	}
	d0, _ := r.Get(ctx, "dev")
	if err := r.Touch(ctx, "dev", "n-1/1"); err != nil {
		t.Fatal(err)
	}
	d1, _ := r.Get(ctx, "dev")
	if !d1.LastActivityTime.After(d0.LastActivityTime) || d1.ConnectionStateUpdatedTime != d0.ConnectionStateUpdatedTime {
		t.Fatalf("touch: activity %v → %v, state time %v → %v", d0.LastActivityTime, d1.LastActivityTime, d0.ConnectionStateUpdatedTime, d1.ConnectionStateUpdatedTime)
	}
	// Another session's activity changes nothing.
	if err := r.Touch(ctx, "dev", "n-2/9"); err != nil {
		t.Fatal(err)
	}
	if d2, _ := r.Get(ctx, "dev"); !d2.LastActivityTime.Equal(d1.LastActivityTime) {
		t.Fatal("a stale session's activity was recorded")
	}
}
