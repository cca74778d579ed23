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

// defaultPolicies are Azure's built-in policies of a new hub.
var defaultPolicies = []Policy{
	{Name: "iothubowner", Rights: []Right{RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect}},
	{Name: "service", Rights: []Right{ServiceConnect}},
	{Name: "registryRead", Rights: []Right{RegistryRead}},
	{Name: "registryReadWrite", Rights: []Right{RegistryRead, RegistryWrite}},
}

// EnsureDefaultPolicies creates those of Azure's default policies
// (iothubowner, service, registryRead, registryReadWrite) that are missing,
// with new random keys. Existing policies are never touched, so keys survive
// restarts, and two nodes racing on a new hub agree on one set of keys
// because each policy is written with a create-only operation.
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
	if name == "" || len(name) > 256 {
		return Policy{}, fmt.Errorf("%w: policy %q", ErrNotFound, name)
	}
	e, err := r.policies.Get(ctx, cluster.SubjectToken(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Policy{}, fmt.Errorf("%w: policy %q", ErrNotFound, name)
	}
	if err != nil {
		return Policy{}, fmt.Errorf("registry: get policy %q: %w", name, err)
	}
	var p Policy
	if err := json.Unmarshal(e.Value(), &p); err != nil {
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
