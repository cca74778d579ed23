package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tether-io/tether/hub/cluster"
)

// Right is a permission of an access policy, named as in Azure.
type Right string

// Rights of access policies.
const (
	RegistryRead   Right = "RegistryRead"
	RegistryWrite  Right = "RegistryWrite"
	ServiceConnect Right = "ServiceConnect"
	DeviceConnect  Right = "DeviceConnect"
)

// Policy is a shared access policy: a key name, two keys and its rights.
type Policy struct {
	Name         string  `json:"keyName"`
	PrimaryKey   string  `json:"primaryKey"`
	SecondaryKey string  `json:"secondaryKey"`
	Rights       []Right `json:"rights"`
}

// Has reports whether p grants r.
func (p Policy) Has(r Right) bool {
	return slices.Contains(p.Rights, r)
}

// OwnerPolicy is the hub's own owner policy: tetherd writes its connection
// string to owner.connstr at each start and the readiness probe reads it.
// It can be neither removed nor lose a right, so a hub always has a policy
// holding every right and an operator cannot lock themselves out; its keys
// rotate like any other's.
const OwnerPolicy = "iothubowner"

// AllRights are the rights a policy may hold, in Azure's order.
var AllRights = []Right{RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect}

// ErrProtected refuses a change that would take the owner policy away.
var ErrProtected = errors.New("registry: protected")

// IsOwner reports whether p holds every right: what managing access
// policies takes, as Azure's iothubowner.
func (p Policy) IsOwner() bool {
	for _, r := range AllRights {
		if !p.Has(r) {
			return false
		}
	}
	return true
}

// ValidatePolicyName checks an access policy's name: 1 to 64 ASCII
// letters, digits and . _ -, as Azure names them. Such a name needs no
// escaping in a connection string or a token.
func ValidatePolicyName(name string) error { return validateName("policy name", name) }

// ParseRights reads rights as Azure writes them, "RegistryRead,
// ServiceConnect": names separated by commas, spaces around them ignored,
// any letter case. At least one is needed. The result is in Azure's order
// without repeats.
func ParseRights(s string) ([]Right, error) {
	seen := make(map[Right]bool)
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		i := slices.IndexFunc(AllRights, func(r Right) bool { return strings.EqualFold(string(r), f) })
		if i < 0 {
			return nil, fmt.Errorf("%w: unknown right %q: the rights are %s", ErrInvalid, f, FormatRights(AllRights))
		}
		seen[AllRights[i]] = true
	}
	var out []Right
	for _, r := range AllRights {
		if seen[r] {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: a policy needs at least one right of %s", ErrInvalid, FormatRights(AllRights))
	}
	return out, nil
}

// FormatRights writes rights as Azure does: "RegistryRead, ServiceConnect".
func FormatRights(rs []Right) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// defaultPolicies are Azure's built-in policies of a new hub, the owner
// first.
var defaultPolicies = []Policy{
	{Name: OwnerPolicy, Rights: AllRights},
	{Name: "service", Rights: []Right{ServiceConnect}},
	{Name: "registryRead", Rights: []Right{RegistryRead}},
	{Name: "registryReadWrite", Rights: []Right{RegistryRead, RegistryWrite}},
}

// EnsureDefaultPolicies creates the owner policy if it is missing, with new
// random keys, and on a new hub (the call that created the owner policy)
// Azure's other default policies (service, registryRead,
// registryReadWrite). An operator's removal of one of those therefore
// lasts; existing policies are never touched, so keys survive restarts. Two
// nodes racing on a new hub agree on one set of keys because each policy
// is written with a create-only operation.
func (r *Registry) EnsureDefaultPolicies(ctx context.Context) (created bool, err error) {
	for _, p := range defaultPolicies {
		if p.PrimaryKey, err = NewKey(); err != nil {
			return created, err
		}
		if p.SecondaryKey, err = NewKey(); err != nil {
			return created, err
		}
		data, err := json.Marshal(p)
		if err != nil {
			return created, fmt.Errorf("registry: encode policy: %w", err)
		}
		_, err = r.policies.Create(ctx, cluster.SubjectToken(p.Name), data)
		if errors.Is(err, jetstream.ErrKeyExists) {
			if p.Name == OwnerPolicy {
				return false, nil // not a new hub
			}
			continue
		}
		if err != nil {
			return created, fmt.Errorf("registry: create policy %q: %w", p.Name, err)
		}
		created = true
		r.log.Info("created access policy", "policy", p.Name, "rights", p.Rights)
	}
	return created, nil
}

// Policy returns the access policy named name.
func (r *Registry) Policy(ctx context.Context, name string) (Policy, error) {
	p, _, err := r.loadPolicy(ctx, name)
	return p, err
}

// loadPolicy reads a policy and the revision a compare-and-set needs.
func (r *Registry) loadPolicy(ctx context.Context, name string) (Policy, uint64, error) {
	if name == "" || len(name) > 256 {
		return Policy{}, 0, fmt.Errorf("%w: policy %q", ErrNotFound, name)
	}
	e, err := r.policies.Get(ctx, cluster.SubjectToken(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Policy{}, 0, fmt.Errorf("%w: policy %q", ErrNotFound, name)
	}
	if err != nil {
		return Policy{}, 0, fmt.Errorf("registry: get policy %q: %w", name, err)
	}
	p, err := decodePolicy(name, e.Value())
	return p, e.Revision(), err
}

func decodePolicy(name string, data []byte) (Policy, error) {
	var p Policy
	if err := json.Unmarshal(data, &p); err != nil {
		return Policy{}, fmt.Errorf("registry: policy %q: stored record: %w", name, err)
	}
	return p, nil
}

// Policies returns every access policy, sorted by name.
func (r *Registry) Policies(ctx context.Context) ([]Policy, error) {
	keys, err := listKeys(ctx, r.policies)
	if err != nil {
		return nil, fmt.Errorf("registry: list policies: %w", err)
	}
	var out []Policy
	for _, k := range keys {
		name, err := cluster.ParseSubjectToken(k)
		if err != nil {
			continue
		}
		p, err := r.Policy(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Policy) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// PutPolicy creates the access policy p, or with replace set creates or
// replaces it, as Azure's shared access policies are added and edited.
// Rights must be valid and at least one; a key left empty is made on
// create and kept on replace, so that editing rights never changes a key.
// The owner policy may not lose a right (ErrProtected). The result holds
// the keys.
func (r *Registry) PutPolicy(ctx context.Context, p Policy, replace bool) (out Policy, created bool, err error) {
	if err := ValidatePolicyName(p.Name); err != nil {
		return Policy{}, false, err
	}
	if p.Rights, err = ParseRights(FormatRights(p.Rights)); err != nil {
		return Policy{}, false, err
	}
	if p.Name == OwnerPolicy && !p.IsOwner() {
		return Policy{}, false, fmt.Errorf("%w: %s is the hub's owner policy and keeps every right (%s)", ErrProtected, OwnerPolicy, FormatRights(AllRights))
	}
	if err := validateKeys(p.PrimaryKey, p.SecondaryKey); err != nil {
		return Policy{}, false, err
	}
	key := cluster.SubjectToken(p.Name)
	for range maxAttempts {
		cur, rev, err := r.loadPolicy(ctx, p.Name)
		switch {
		case errors.Is(err, ErrNotFound):
			out, err = withKeys(p, Policy{})
			if err != nil {
				return Policy{}, false, err
			}
			data, err := json.Marshal(out)
			if err != nil {
				return Policy{}, false, fmt.Errorf("registry: encode policy: %w", err)
			}
			_, err = r.policies.Create(ctx, key, data)
			if errors.Is(err, jetstream.ErrKeyExists) {
				if !replace {
					return Policy{}, false, fmt.Errorf("%w: policy %q", ErrExists, p.Name)
				}
				continue
			}
			if err != nil {
				return Policy{}, false, fmt.Errorf("registry: create policy %q: %w", p.Name, err)
			}
			return out, true, nil
		case err != nil:
			return Policy{}, false, err
		case !replace:
			return Policy{}, false, fmt.Errorf("%w: policy %q", ErrExists, p.Name)
		}
		if out, err = withKeys(p, cur); err != nil {
			return Policy{}, false, err
		}
		ok, err := r.updatePolicy(ctx, out, rev)
		if err != nil {
			return Policy{}, false, err
		}
		if ok {
			return out, false, nil
		}
	}
	return Policy{}, false, fmt.Errorf("%w: policy %q: too many concurrent writes", ErrPrecondition, p.Name)
}

// withKeys is p with the keys of cur, or new ones, where p has none.
func withKeys(p, cur Policy) (Policy, error) {
	for _, k := range [...]struct {
		dst *string
		old string
	}{{&p.PrimaryKey, cur.PrimaryKey}, {&p.SecondaryKey, cur.SecondaryKey}} {
		if *k.dst != "" {
			continue
		}
		if *k.dst = k.old; *k.dst == "" {
			var err error
			if *k.dst, err = NewKey(); err != nil {
				return Policy{}, err
			}
		}
	}
	return p, nil
}

// updatePolicy writes p over revision rev; ok is false when another
// write came first.
func (r *Registry) updatePolicy(ctx context.Context, p Policy, rev uint64) (ok bool, err error) {
	data, err := json.Marshal(p)
	if err != nil {
		return false, fmt.Errorf("registry: encode policy: %w", err)
	}
	_, err = r.policies.Update(ctx, cluster.SubjectToken(p.Name), data, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("registry: write policy %q: %w", p.Name, err)
	}
	return true, nil
}

// RotatePolicyKey gives the policy a new primary key, or secondary with
// secondary set, and returns the policy with it. Tokens signed with the
// old key stop working at once on every node (reads are never cached).
func (r *Registry) RotatePolicyKey(ctx context.Context, name string, secondary bool) (Policy, error) {
	for range maxAttempts {
		p, rev, err := r.loadPolicy(ctx, name)
		if err != nil {
			return Policy{}, err
		}
		key, err := NewKey()
		if err != nil {
			return Policy{}, err
		}
		if secondary {
			p.SecondaryKey = key
		} else {
			p.PrimaryKey = key
		}
		ok, err := r.updatePolicy(ctx, p, rev)
		if err != nil {
			return Policy{}, err
		}
		if ok {
			return p, nil
		}
	}
	return Policy{}, fmt.Errorf("%w: policy %q: too many concurrent writes", ErrPrecondition, name)
}

// DeletePolicy removes an access policy; its keys stop working at once.
// The owner policy cannot be removed (ErrProtected).
func (r *Registry) DeletePolicy(ctx context.Context, name string) error {
	if err := ValidatePolicyName(name); err != nil {
		return err
	}
	if name == OwnerPolicy {
		return fmt.Errorf("%w: %s is the hub's owner policy and cannot be removed (rotate its keys instead)", ErrProtected, OwnerPolicy)
	}
	_, rev, err := r.loadPolicy(ctx, name)
	if err != nil {
		return err
	}
	// The revision read: a policy removed and added again meanwhile is
	// another policy, and stays.
	err = r.policies.Delete(ctx, cluster.SubjectToken(name), jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("%w: policy %q changed meanwhile", ErrPrecondition, name)
	}
	if err != nil {
		return fmt.Errorf("registry: delete policy %q: %w", name, err)
	}
	return nil
}
