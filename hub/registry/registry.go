// Package registry keeps device identities, access policies and device
// presence in JetStream key-value buckets, so every hub node sees the same
// registry and a restart keeps it.
//
// Writes follow Azure IoT Hub's PUT /devices/{id} and DELETE semantics
// (If-Match with etags) and are compare-and-set on the bucket's revision, so
// two nodes writing the same device at once cannot lose an update. The etag
// is derived from that revision rather than stored, which makes it change on
// every write by construction.
//
// Reads go to the bucket each time (JetStream direct get, no cache): a SAS
// check must see a key rotation or a disabled device made on another node at
// once, which a watcher-fed cache could only promise eventually.
//
// A read or write that meets a leader election of a bucket's stream (a
// node was lost) waits for the new leader, 10 s at most, rather
// than failing its caller (election.go).
package registry

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/wire"
)

// Errors of the registry; callers map them to Azure's error codes.
var (
	ErrNotFound     = errors.New("registry: not found")
	ErrExists       = errors.New("registry: already exists")
	ErrPrecondition = errors.New("registry: precondition failed")
	ErrInvalid      = errors.New("registry: invalid argument")
)

// Bucket names. Fixed so that every node of a hub finds the same buckets.
const (
	BucketDevices  = "tether-devices"
	BucketPolicies = "tether-policies"
	BucketPresence = "tether-presence"
	// BucketCertificates holds the CA certificates uploaded for devices of
	// type certificateAuthority (certificates.go).
	BucketCertificates = "tether-certificates"
)

// maxAttempts bounds compare-and-set retries of unconditional writes; past
// it the key is too contended and the caller gets ErrPrecondition.
const maxAttempts = 16

// Options configures Open. The zero value works.
type Options struct {
	Logger *slog.Logger
	// Replicas of each bucket when Open creates it; 0 means 1. A clustered
	// hub wants 3. Existing buckets are left as they are.
	Replicas int
}

// Registry is the device and policy registry. It is safe for concurrent
// use and holds no goroutines, so it needs no Close.
type Registry struct {
	devices  jetstream.KeyValue
	policies jetstream.KeyValue
	presence jetstream.KeyValue
	certs    jetstream.KeyValue
	log      *slog.Logger
	now      func() time.Time

	// statuses holds the status Status decoded from each device's record,
	// by the record's revision (statusCache).
	statuses statusCache
}

// Open opens the registry's buckets, creating those that are missing.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Registry, error) {
	r := &Registry{log: opts.Logger, now: func() time.Time { return time.Now().UTC() }}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	replicas := max(opts.Replicas, 1)
	var err error
	if r.devices, err = r.bucket(ctx, js, BucketDevices, "Tether device identities", replicas); err != nil {
		return nil, err
	}
	if r.policies, err = r.bucket(ctx, js, BucketPolicies, "Tether access policies", replicas); err != nil {
		return nil, err
	}
	if r.presence, err = r.bucket(ctx, js, BucketPresence, "Tether device connection state", replicas); err != nil {
		return nil, err
	}
	if r.certs, err = r.bucket(ctx, js, BucketCertificates, "Tether CA certificates for device authentication", replicas); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Registry) bucket(ctx context.Context, js jetstream.JetStream, name, desc string, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if err == nil {
		return elected(kv), nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("registry: open bucket %s: %w", name, err)
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: desc,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Another node created it between our two calls.
		kv, err = js.KeyValue(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: create bucket %s: %w", name, err)
	}
	r.log.Info("created registry bucket", "bucket", name)
	return elected(kv), nil
}

// Get returns the device with id, its etag and its connection state.
func (r *Registry) Get(ctx context.Context, id string) (wire.Device, error) {
	if err := ValidateID(id); err != nil {
		return wire.Device{}, err
	}
	d, _, err := r.load(ctx, id)
	if err != nil {
		return wire.Device{}, err
	}
	if err := r.fillPresence(ctx, &d); err != nil {
		return wire.Device{}, err
	}
	return d, nil
}

// Record returns device id's registry record without its connection
// state: one read where Get makes two, for callers that decide on the
// record alone (the stream path, which learns whether the device is
// online by asking it).
func (r *Registry) Record(ctx context.Context, id string) (wire.Device, error) {
	if err := ValidateID(id); err != nil {
		return wire.Device{}, err
	}
	d, _, err := r.load(ctx, id)
	return d, err
}

// Status returns device id's status (wire.StatusEnabled or
// wire.StatusDisabled), read from the registry as Record reads it, for
// every stream: only the decoding is spared when the record's revision is
// the one decoded last time. A record changes only with a new revision, so
// the answer is always the record's as the registry holds it now.
func (r *Registry) Status(ctx context.Context, id string) (string, error) {
	if err := ValidateID(id); err != nil {
		return "", err
	}
	key := cluster.SubjectToken(id)
	e, err := r.deviceEntry(ctx, id)
	if errors.Is(err, ErrNotFound) {
		r.statuses.forget(key)
	}
	if err != nil {
		return "", err
	}
	if st, ok := r.statuses.get(key, e.Revision()); ok {
		return st, nil
	}
	var d struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return "", fmt.Errorf("registry: device %q: stored record: %w", id, err)
	}
	r.statuses.put(key, e.Revision(), d.Status)
	return d.Status, nil
}

// statusCache maps a device's key to the status decoded from its record at
// a revision. It is bounded: past maxStatuses entries it starts again
// empty, which costs a decoding per device and nothing else.
type statusCache struct {
	mu sync.Mutex
	m  map[string]revStatus
}

type revStatus struct {
	rev    uint64
	status string
}

const maxStatuses = 100_000

func (c *statusCache) get(key string, rev uint64) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	return v.status, ok && v.rev == rev
}

func (c *statusCache) put(key string, rev uint64, status string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxStatuses {
		c.m = make(map[string]revStatus)
	}
	c.m[key] = revStatus{rev, status}
}

func (c *statusCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// load reads a device and the revision its etag comes from.
func (r *Registry) load(ctx context.Context, id string) (wire.Device, uint64, error) {
	e, err := r.deviceEntry(ctx, id)
	if err != nil {
		return wire.Device{}, 0, err
	}
	var d wire.Device
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return wire.Device{}, 0, fmt.Errorf("registry: device %q: stored record: %w", id, err)
	}
	d.ETag = etag(e.Revision())
	return d, e.Revision(), nil
}

// deviceEntry reads device id's entry in the bucket; ErrNotFound when
// there is none.
func (r *Registry) deviceEntry(ctx context.Context, id string) (jetstream.KeyValueEntry, error) {
	e, err := r.devices.Get(ctx, cluster.SubjectToken(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: device %q", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: get device %q: %w", id, err)
	}
	return e, nil
}

// etag turns a bucket revision into an Azure-looking etag: Azure's are
// base64 of a decimal counter too.
func etag(rev uint64) string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatUint(rev, 10)))
}

// cleanETag accepts an If-Match value as HTTP carries it (quoted, maybe
// weak) as well as the bare etag of the device document.
func cleanETag(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "W/")
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}

// Put creates or replaces a device, with the If-Match semantics of Azure's
// PUT /devices/{id}:
//
//   - ifMatch "": create only; ErrExists if the device exists.
//   - ifMatch "*": create, or replace whatever is stored.
//   - ifMatch an etag: replace only that version; ErrPrecondition if the
//     device changed since, ErrNotFound if it is gone.
//
// Missing keys are generated, authentication.type defaults to "sas" and
// status to enabled. On replace, missing keys and status keep their stored
// values rather than being regenerated or re-enabled: a client that edits a
// device without echoing its keys must not lock the device out or undo a
// disable. generationId is the server's; statusUpdatedTime moves when the
// status changes. The result carries the new etag.
func (r *Registry) Put(ctx context.Context, d wire.Device, ifMatch string) (dev wire.Device, created bool, err error) {
	if err := ValidateID(d.DeviceID); err != nil {
		return wire.Device{}, false, err
	}
	if err := validateDoc(d); err != nil {
		return wire.Device{}, false, err
	}
	key := cluster.SubjectToken(d.DeviceID)
	ifMatch = cleanETag(ifMatch)
	for range maxAttempts {
		var cur *wire.Device
		var rev uint64
		if ifMatch != "" {
			c, rv, err := r.load(ctx, d.DeviceID)
			switch {
			case errors.Is(err, ErrNotFound) && ifMatch == "*":
			case err != nil:
				return wire.Device{}, false, err
			case ifMatch != "*" && c.ETag != ifMatch:
				return wire.Device{}, false, fmt.Errorf("%w: device %q has etag %q, not %q", ErrPrecondition, d.DeviceID, c.ETag, ifMatch)
			default:
				cur, rev = &c, rv
			}
		}
		next, err := r.merge(d, cur)
		if err != nil {
			return wire.Device{}, false, err
		}
		data, err := json.Marshal(next)
		if err != nil {
			return wire.Device{}, false, fmt.Errorf("registry: encode device: %w", err)
		}
		var newRev uint64
		if cur == nil {
			newRev, err = r.devices.Create(ctx, key, data)
			if errors.Is(err, jetstream.ErrKeyExists) {
				if ifMatch == "" {
					return wire.Device{}, false, fmt.Errorf("%w: device %q", ErrExists, d.DeviceID)
				}
				continue // "*": created meanwhile; replace it instead.
			}
		} else {
			newRev, err = r.devices.Update(ctx, key, data, rev)
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				if ifMatch != "*" {
					return wire.Device{}, false, fmt.Errorf("%w: device %q changed meanwhile", ErrPrecondition, d.DeviceID)
				}
				continue
			}
		}
		if err != nil {
			return wire.Device{}, false, fmt.Errorf("registry: write device %q: %w", d.DeviceID, err)
		}
		next.ETag = etag(newRev)
		if err := r.fillPresence(ctx, &next); err != nil {
			return wire.Device{}, false, err
		}
		return next, cur == nil, nil
	}
	return wire.Device{}, false, fmt.Errorf("%w: device %q: too many concurrent writes", ErrPrecondition, d.DeviceID)
}

// Authentication types Azure knows for devices, by lower-case name.
var authTypes = map[string]string{
	"sas":                  "sas",
	"selfsigned":           "selfSigned",
	"certificateauthority": "certificateAuthority",
}

// validateDoc checks the fields of a document a client sent.
func validateDoc(d wire.Device) error {
	switch strings.ToLower(d.Status) {
	case "", wire.StatusEnabled, wire.StatusDisabled:
	default:
		return fmt.Errorf("%w: status %q is neither enabled nor disabled", ErrInvalid, d.Status)
	}
	t := d.Authentication.Type
	if _, ok := authTypes[strings.ToLower(t)]; t != "" && !ok {
		return fmt.Errorf("%w: authentication type %q", ErrInvalid, t)
	}
	if err := validateThumbprints(d.Authentication); err != nil {
		return err
	}
	if k := d.Authentication.SymmetricKey; k != nil {
		return validateKeys(k.PrimaryKey, k.SecondaryKey)
	}
	return nil
}

// validateKeys checks the keys a client chose (a device's or a policy's);
// an empty one is left for the registry to make or keep.
func validateKeys(primary, secondary string) error {
	for _, kk := range [...]struct{ name, v string }{{"primary", primary}, {"secondary", secondary}} {
		if kk.v == "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(kk.v)
		if err != nil || len(b) < 16 || len(b) > 64 {
			// Never echo the key itself.
			return fmt.Errorf("%w: %s key must be base64 of 16 to 64 bytes", ErrInvalid, kk.name)
		}
	}
	return nil
}

// merge builds the stored document from what a client sent and the stored
// version (nil on create). Connection fields and the etag are never stored.
func (r *Registry) merge(in wire.Device, cur *wire.Device) (wire.Device, error) {
	now := r.now()
	out := in
	out.ETag = ""
	out.ConnectionState = ""
	out.ConnectionStateUpdatedTime = time.Time{}
	out.LastActivityTime = time.Time{}
	out.CloudToDeviceMessageCount = 0
	out.Takeovers = nil // presence, as the connection fields
	out.DeviceClientType = ""

	out.Status = strings.ToLower(in.Status)
	if cur == nil {
		gen, err := generationID()
		if err != nil {
			return wire.Device{}, err
		}
		out.GenerationID = gen
		if out.Status == "" {
			out.Status = wire.StatusEnabled
		}
		out.StatusUpdatedTime = now
	} else {
		out.GenerationID = cur.GenerationID
		if out.Status == "" {
			out.Status = cur.Status
		}
		out.StatusUpdatedTime = cur.StatusUpdatedTime
		if out.Status != cur.Status {
			out.StatusUpdatedTime = now
		}
	}

	out.Authentication.Type = authTypes[strings.ToLower(in.Authentication.Type)]
	if out.Authentication.Type == "" {
		out.Authentication.Type = "sas"
	}
	if out.Authentication.Type != "sas" {
		// A certificate device must not also be reachable by a key.
		out.Authentication.SymmetricKey = nil
		out.Authentication.X509Thumbprint = normalizedThumbprints(out.Authentication)
		if out.Authentication.Type == wire.AuthSelfSigned && out.Authentication.X509Thumbprint == nil {
			// As with keys: an edit that does not echo the thumbprints
			// keeps the stored ones rather than locking the device out.
			if cur == nil || cur.Authentication.Type != wire.AuthSelfSigned || cur.Authentication.X509Thumbprint == nil {
				return wire.Device{}, fmt.Errorf("%w: a selfSigned device needs x509Thumbprint.primaryThumbprint (its certificate's SHA-256 fingerprint)", ErrInvalid)
			}
			out.Authentication.X509Thumbprint = cur.Authentication.X509Thumbprint
		}
		return out, nil
	}
	// Nor a key device by a certificate.
	out.Authentication.X509Thumbprint = nil
	var keys wire.SymmetricKey
	if in.Authentication.SymmetricKey != nil {
		keys = *in.Authentication.SymmetricKey
	}
	var old wire.SymmetricKey
	if cur != nil && cur.Authentication.Type == "sas" && cur.Authentication.SymmetricKey != nil {
		old = *cur.Authentication.SymmetricKey
	}
	var err error
	if keys.PrimaryKey == "" {
		if keys.PrimaryKey = old.PrimaryKey; keys.PrimaryKey == "" {
			if keys.PrimaryKey, err = NewKey(); err != nil {
				return wire.Device{}, err
			}
		}
	}
	if keys.SecondaryKey == "" {
		if keys.SecondaryKey = old.SecondaryKey; keys.SecondaryKey == "" {
			if keys.SecondaryKey, err = NewKey(); err != nil {
				return wire.Device{}, err
			}
		}
	}
	out.Authentication.SymmetricKey = &keys
	return out, nil
}

// NewKey returns a new random key: base64 of 32 bytes, as Azure makes them.
func NewKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("registry: random key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b[:]), nil
}

// generationID tells apart two devices that had the same id at different
// times. Azure's are 18-digit decimals; so are these.
func generationID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("registry: random generation id: %w", err)
	}
	n := binary.BigEndian.Uint64(b[:])%900_000_000_000_000_000 + 100_000_000_000_000_000
	return strconv.FormatUint(n, 10), nil
}

// Delete removes a device. ifMatch "" or "*" deletes whatever is stored; an
// etag deletes only that version (ErrPrecondition otherwise).
func (r *Registry) Delete(ctx context.Context, id, ifMatch string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	ifMatch = cleanETag(ifMatch)
	key := cluster.SubjectToken(id)
	for range maxAttempts {
		cur, rev, err := r.load(ctx, id)
		if err != nil {
			return err
		}
		if ifMatch != "" && ifMatch != "*" && cur.ETag != ifMatch {
			return fmt.Errorf("%w: device %q has etag %q, not %q", ErrPrecondition, id, cur.ETag, ifMatch)
		}
		err = r.devices.Delete(ctx, key, jetstream.LastRevision(rev))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if ifMatch != "" && ifMatch != "*" {
				return fmt.Errorf("%w: device %q changed meanwhile", ErrPrecondition, id)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("registry: delete device %q: %w", id, err)
		}
		// Presence of a deleted device is dropped so that it does not
		// linger; a late disconnect of its session then finds nothing and
		// does nothing. Failing here leaves a stale entry, not a wrong one.
		if err := r.presence.Delete(ctx, key); err != nil {
			r.log.Warn("drop presence of deleted device", "device", id, "err", err)
		}
		return nil
	}
	return fmt.Errorf("%w: device %q: too many concurrent writes", ErrPrecondition, id)
}

// List returns up to top devices (1000 when top <= 0), sorted by id.
func (r *Registry) List(ctx context.Context, top int) ([]wire.Device, error) {
	if top <= 0 {
		top = 1000
	}
	keys, err := listKeys(ctx, r.devices)
	if err != nil {
		return nil, fmt.Errorf("registry: list devices: %w", err)
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		id, err := cluster.ParseSubjectToken(k)
		if err != nil || ValidateID(id) != nil {
			continue // not written by this package
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]wire.Device, 0, min(top, len(ids)))
	for _, id := range ids {
		if len(out) == top {
			break
		}
		d, err := r.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// ValidateID checks a device id against Azure's rules: 1 to 128 ASCII
// letters, digits and - . + % _ # * ? ! ( ) , : = @ $ '.
func ValidateID(id string) error { return validateID("device id", id) }

// ValidateModuleID checks a module id: Azure gives module ids the rules
// of device ids.
func ValidateModuleID(id string) error { return validateID("module id", id) }

func validateID(kind, id string) error {
	if len(id) == 0 || len(id) > 128 {
		return fmt.Errorf("%w: %s must be 1 to 128 characters", ErrInvalid, kind)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.+%_#*?!(),:=@$'", c) >= 0:
		default:
			return fmt.Errorf("%w: %s %q has a character outside Azure's set", ErrInvalid, kind, id)
		}
	}
	return nil
}
