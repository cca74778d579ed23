package registry

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/wire"
)

func TestParseRights(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Right
		err  string
	}{
		{in: "ServiceConnect", want: []Right{ServiceConnect}},
		{in: " serviceconnect , REGISTRYREAD,,RegistryRead", want: []Right{RegistryRead, ServiceConnect}},
		{in: "DeviceConnect, ServiceConnect, RegistryWrite, RegistryRead", want: AllRights},
		{in: "", err: "at least one right"},
		{in: " , ", err: "at least one right"},
		{in: "RegistryRead, Admin", err: `unknown right "Admin"`},
	} {
		got, err := ParseRights(tc.in)
		if tc.err != "" {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRights(%q) = %v, %v; want an ErrInvalid with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseRights(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if got := FormatRights([]Right{RegistryRead, ServiceConnect}); got != "RegistryRead, ServiceConnect" {
		t.Errorf("FormatRights = %q", got)
	}
}

// TestPolicyLifecycle adds, changes, rotates and removes a policy, and
// shows what the registry refuses: a taken name, a malformed name, rights
// or key, and anything that would take the owner policy away.
func TestPolicyLifecycle(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	if _, err := r.EnsureDefaultPolicies(ctx); err != nil {
		t.Fatal(err)
	}

	p, created, err := r.PutPolicy(ctx, Policy{Name: "ops", Rights: []Right{ServiceConnect, RegistryRead}}, false)
	if err != nil || !created {
		t.Fatalf("create = %v, %v", created, err)
	}
	validKey(t, p.PrimaryKey)
	validKey(t, p.SecondaryKey)
	if !slices.Equal(p.Rights, []Right{RegistryRead, ServiceConnect}) {
		t.Errorf("rights %v, want Azure's order", p.Rights)
	}
	if got, err := r.Policy(ctx, "ops"); err != nil || !policyEqual(got, p) {
		t.Fatalf("stored %+v, %v; want %+v", got, err, p)
	}
	if _, _, err := r.PutPolicy(ctx, Policy{Name: "ops", Rights: []Right{ServiceConnect}}, false); !errors.Is(err, ErrExists) {
		t.Errorf("create over an existing policy: %v, want ErrExists", err)
	}

	// Replacing the rights keeps the keys; a chosen key is taken.
	chosen := "Y2hvc2VuLWtleS1jaG9zZW4ta2V5LWNob3Nlbi1rZXk="
	q, created, err := r.PutPolicy(ctx, Policy{Name: "ops", Rights: []Right{ServiceConnect}, SecondaryKey: chosen}, true)
	if err != nil || created {
		t.Fatalf("replace = %v, %v", created, err)
	}
	if q.PrimaryKey != p.PrimaryKey || q.SecondaryKey != chosen || !slices.Equal(q.Rights, []Right{ServiceConnect}) {
		t.Errorf("after replace %+v", q)
	}

	for _, tc := range []struct {
		what string
		p    Policy
		err  error
	}{
		{"a name with a space", Policy{Name: "a b", Rights: []Right{ServiceConnect}}, ErrInvalid},
		{"a name of 65", Policy{Name: strings.Repeat("n", 65), Rights: []Right{ServiceConnect}}, ErrInvalid},
		{"no rights", Policy{Name: "none"}, ErrInvalid},
		{"an unknown right", Policy{Name: "odd", Rights: []Right{"Everything"}}, ErrInvalid},
		{"a key too short", Policy{Name: "short", Rights: []Right{ServiceConnect}, PrimaryKey: "c2hvcnQ="}, ErrInvalid},
		{"the owner losing a right", Policy{Name: OwnerPolicy, Rights: []Right{RegistryRead, RegistryWrite, ServiceConnect}}, ErrProtected},
	} {
		if _, _, err := r.PutPolicy(ctx, tc.p, true); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.what, err, tc.err)
		}
	}
	if _, err := r.Policy(ctx, "none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused policy was stored: %v", err)
	}

	// Rotation replaces the one key asked for.
	before, _ := r.Policy(ctx, "ops")
	after, err := r.RotatePolicyKey(ctx, "ops", false)
	if err != nil {
		t.Fatal(err)
	}
	validKey(t, after.PrimaryKey)
	if after.PrimaryKey == before.PrimaryKey || after.SecondaryKey != before.SecondaryKey {
		t.Errorf("primary rotation: before %+v, after %+v", before, after)
	}
	after2, err := r.RotatePolicyKey(ctx, "ops", true)
	if err != nil {
		t.Fatal(err)
	}
	if after2.PrimaryKey != after.PrimaryKey || after2.SecondaryKey == after.SecondaryKey {
		t.Errorf("secondary rotation: before %+v, after %+v", after, after2)
	}
	if stored, _ := r.Policy(ctx, "ops"); !policyEqual(stored, after2) {
		t.Errorf("stored %+v, rotation returned %+v", stored, after2)
	}
	if _, err := r.RotatePolicyKey(ctx, "nope", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("rotating an unknown policy: %v", err)
	}

	// The owner keeps every right and stays; its keys rotate.
	owner, _ := r.Policy(ctx, OwnerPolicy)
	if err := r.DeletePolicy(ctx, OwnerPolicy); !errors.Is(err, ErrProtected) {
		t.Errorf("removing the owner policy: %v, want ErrProtected", err)
	}
	if _, err := r.RotatePolicyKey(ctx, OwnerPolicy, false); err != nil {
		t.Errorf("rotating the owner's key: %v", err)
	}
	if got, _ := r.Policy(ctx, OwnerPolicy); !got.IsOwner() || got.PrimaryKey == owner.PrimaryKey {
		t.Errorf("owner after rotation %+v", got)
	}

	if err := r.DeletePolicy(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Policy(ctx, "ops"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if err := r.DeletePolicy(ctx, "ops"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	names := func() []string {
		ps, err := r.Policies(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	if got := names(); !slices.Equal(got, []string{"iothubowner", "registryRead", "registryReadWrite", "service"}) {
		t.Errorf("policies %v", got)
	}
}

// TestEnsureDefaultPoliciesKeepsRemovals: a default policy an operator
// removed is not made again at the next start; the owner policy is.
func TestEnsureDefaultPoliciesKeepsRemovals(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	if _, err := r.EnsureDefaultPolicies(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.DeletePolicy(ctx, "service"); err != nil {
		t.Fatal(err)
	}
	if created, err := r.EnsureDefaultPolicies(ctx); err != nil || created {
		t.Fatalf("Ensure after a removal = %v, %v", created, err)
	}
	if _, err := r.Policy(ctx, "service"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a removed default policy came back: %v", err)
	}
	// An owner lost outside the hub's API (a store edited by hand) is
	// made again: the hub cannot start without it.
	if err := r.policies.Delete(ctx, cluster.SubjectToken(OwnerPolicy)); err != nil {
		t.Fatal(err)
	}
	if created, err := r.EnsureDefaultPolicies(ctx); err != nil || !created {
		t.Fatalf("Ensure without an owner = %v, %v", created, err)
	}
	if p, err := r.Policy(ctx, OwnerPolicy); err != nil || !p.IsOwner() {
		t.Errorf("owner %+v, %v", p, err)
	}
}

// TestWatchKeys: the watch reports each write and removal of a device or a
// policy, made after it started, in order, and nothing written before.
func TestWatchKeys(t *testing.T) {
	r := newRegistry(t)
	ctx := t.Context()
	mustPut(t, r, wire.Device{DeviceID: "before"}, "")

	type event struct {
		kind, name string
		key        string // the primary key, "" when deleted
	}
	events := make(chan event, 16)
	stop, err := r.WatchKeys(ctx, KeyWatch{
		Device: func(id string, d *wire.Device) {
			e := event{kind: "device", name: id}
			if d != nil {
				e.key = d.Authentication.SymmetricKey.PrimaryKey
			}
			events <- e
		},
		Policy: func(name string, p *Policy) {
			e := event{kind: "policy", name: name}
			if p != nil {
				e.key = p.PrimaryKey
			}
			events <- e
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	next := func() event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no event from the watch")
			return event{}
		}
	}

	d := mustPut(t, r, wire.Device{DeviceID: "dev1"}, "")
	if e := next(); e != (event{"device", "dev1", d.Authentication.SymmetricKey.PrimaryKey}) {
		t.Errorf("after create: %+v", e)
	}
	p, _, err := r.PutPolicy(ctx, Policy{Name: "ops", Rights: []Right{ServiceConnect}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if e := next(); e != (event{"policy", "ops", p.PrimaryKey}) {
		t.Errorf("after policy create: %+v", e)
	}
	p, err = r.RotatePolicyKey(ctx, "ops", false)
	if err != nil {
		t.Fatal(err)
	}
	if e := next(); e != (event{"policy", "ops", p.PrimaryKey}) {
		t.Errorf("after rotation: %+v", e)
	}
	if err := r.DeletePolicy(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	if e := next(); e != (event{"policy", "ops", ""}) {
		t.Errorf("after policy delete: %+v", e)
	}
	if err := r.Delete(ctx, "dev1", ""); err != nil {
		t.Fatal(err)
	}
	if e := next(); e != (event{"device", "dev1", ""}) {
		t.Errorf("after device delete: %+v", e)
	}
	stop()
	select {
	case e := <-events:
		t.Errorf("an event after the last change: %+v", e)
	default:
	}
}
