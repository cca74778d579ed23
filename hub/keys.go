package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// A credential is checked when a device session or a stream begins, and
// never again by itself: a rotated key, a removed policy or a right taken
// away would leave whatever it opened running. So the hub remembers what
// each opened with, watches the registry (every node, whichever node made
// the change), and ends what a change leaves without a valid credential.
//
// A device session's credential is kept by the broker, as a string:
//
//	"<epoch> k <fp>"           one of the device's own keys
//	"<epoch> p <policy> <fp>"  a key of a policy holding DeviceConnect
//	"<epoch> x509"             a certificate (its device's type and status decide)
//
// fp is a fingerprint of the key (keyFP), never the key. A stream remembers
// its policy and key fingerprint in its invocation.
//
// epoch counts the changes this node has seen. A check reads the registry
// after noting the epoch; a change that lands between that read and the
// moment the session or stream is registered here would find nothing to
// end. So registering compares epochs, and on a difference checks the
// credential again against a fresh read.

// keyState is the Server's part of the above.
type keyState struct {
	epoch atomic.Uint64
	stop  func() // ends the registry watch
	// modules counts the module sessions (deviceId/moduleId) here, under
	// Server.mu: a device's change scans the sessions for its modules only
	// when there are some.
	modules int
}

// keyFP is a fingerprint of a key: enough to tell which of a record's two
// keys a credential used, and nothing an attacker could sign with.
func keyFP(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:12])
}

// signedWith is the one of keys tok is signed with, expiry aside (the
// caller checked it already), or "".
func signedWith(tok sas.Token, keys ...string) string {
	for _, k := range keys {
		if k == "" {
			continue
		}
		if err := tok.Verify(k, time.Now()); err == nil || errors.Is(err, sas.ErrExpired) {
			return k
		}
	}
	return ""
}

// Kinds of credential.
const (
	credDeviceKey = "k"
	credPolicyKey = "p"
	credCert      = "x509"
)

// credential is a parsed credential string.
type credential struct {
	epoch  uint64
	kind   string
	policy string // credPolicyKey
	fp     string // credDeviceKey, credPolicyKey
}

func (c credential) String() string {
	s := strconv.FormatUint(c.epoch, 10) + " " + c.kind
	if c.kind == credPolicyKey {
		s += " " + c.policy
	}
	if c.fp != "" {
		s += " " + c.fp
	}
	return s
}

func parseCredential(s string) credential {
	var c credential
	e, rest, _ := strings.Cut(s, " ")
	c.epoch, _ = strconv.ParseUint(e, 10, 64)
	c.kind, rest, _ = strings.Cut(rest, " ")
	if c.kind == credPolicyKey {
		c.policy, rest, _ = strings.Cut(rest, " ")
	}
	c.fp = rest
	return c
}

// deviceStale reports whether c no longer opens a session of the device
// whose record is now d (nil: deleted). A policy's key is the policy's
// affair (policyStale), but no credential outlives its device.
func deviceStale(c credential, d *wire.Device) bool {
	if d == nil || d.Status == wire.StatusDisabled {
		return true
	}
	switch c.kind {
	case credDeviceKey:
		k := d.Authentication.SymmetricKey
		return wire.IsX509(d.Authentication.Type) || k == nil || (c.fp != keyFP(k.PrimaryKey) && c.fp != keyFP(k.SecondaryKey))
	case credCert:
		return !wire.IsX509(d.Authentication.Type)
	}
	return false
}

// policyStale reports whether a key of policy name with fingerprint fp no
// longer grants right, the policy being p now (nil: deleted).
func policyStale(name, fp string, p *registry.Policy, right registry.Right) bool {
	return p == nil || p.Name != name || !p.Has(right) || (fp != keyFP(p.PrimaryKey) && fp != keyFP(p.SecondaryKey))
}

// watchKeys starts the registry watch; Close stops it.
func (s *Server) watchKeys() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cluster.Retry(ctx, s.log, "watching the registry for key changes", func(context.Context) error {
		// The watch lives until Close, not for the attempt.
		stop, err := s.reg.WatchKeys(context.Background(), registry.KeyWatch{Device: s.deviceChanged, Policy: s.policyChanged})
		s.keys.stop = stop
		return err
	})
}

// deviceChanged ends the sessions here of device id and its modules that
// its new record d (nil: deleted) no longer lets in.
func (s *Server) deviceChanged(id string, d *wire.Device) {
	s.keys.epoch.Add(1)
	if n := s.muxKeysChangedDevice(id, d); n > 0 {
		s.log.Info("device data sessions ended: their key or certificate no longer opens the device", "device", id, "sessions", n)
	}
	s.mu.Lock()
	var ids []string
	if s.sessions[id] != nil {
		ids = append(ids, id)
	}
	if s.keys.modules > 0 {
		for clientID := range s.sessions {
			if strings.HasPrefix(clientID, id+"/") {
				ids = append(ids, clientID)
			}
		}
	}
	s.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	n := s.broker.DisconnectStale(func(_, cred string) bool { return deviceStale(parseCredential(cred), d) }, ids...)
	if n > 0 {
		s.log.Info("device sessions ended: their key or certificate no longer opens the device", "device", id, "sessions", n)
	}
}

// policyChanged ends the device sessions and the streams homed here that
// a key of policy name opened and that its new version p (nil: deleted)
// no longer grants.
func (s *Server) policyChanged(name string, p *registry.Policy) {
	s.keys.epoch.Add(1)
	sessions := s.broker.DisconnectStale(func(_, cred string) bool {
		c := parseCredential(cred)
		return c.kind == credPolicyKey && c.policy == name && policyStale(name, c.fp, p, registry.DeviceConnect)
	})
	s.invMu.Lock()
	var ids []string
	for id, inv := range s.invocations {
		if inv.policy == name && policyStale(name, inv.key, p, registry.ServiceConnect) {
			ids = append(ids, id)
		}
	}
	s.invMu.Unlock()
	streams := 0
	if len(ids) > 0 {
		streams = s.relay.CloseStreams(ids, "the key that opened the stream was withdrawn")
	}
	// After the streams: their close frames go out on the sessions first.
	muxes := s.muxKeysChangedPolicy(name, p)
	if sessions > 0 || streams > 0 || muxes > 0 {
		s.log.Info("access policy changed: what its withdrawn key opened has ended", "policy", name, "sessions", sessions, "streams", streams, "muxSessions", muxes)
	}
}

// signedBy fills in c for a device session that checkDevice lets in: the
// key tok is signed with, of the device or of policy (nil for the
// device's own).
func (c *credential) signedBy(tok sas.Token, dev wire.Device, policy *registry.Policy) {
	if policy != nil {
		c.kind, c.policy, c.fp = credPolicyKey, policy.Name, keyFP(signedWith(tok, policy.PrimaryKey, policy.SecondaryKey))
		return
	}
	k := dev.Authentication.SymmetricKey
	c.kind, c.fp = credDeviceKey, keyFP(signedWith(tok, k.PrimaryKey, k.SecondaryKey))
}

// recheckSession checks again, in the background, the credential of
// clientID's new session here if the registry changed since the check
// began. Callers hold s.mu, with s not closed.
func (s *Server) recheckSession(clientID string) {
	cred, ok := s.broker.Credential(clientID)
	if !ok || parseCredential(cred).epoch == s.keys.epoch.Load() {
		return
	}
	s.wg.Go(func() {
		c := parseCredential(cred)
		deviceID, _, _ := strings.Cut(clientID, "/")
		ctx, cancel := ctxTimeout(context.Background())
		defer cancel()
		stale, err := s.sessionStale(ctx, deviceID, c)
		if err != nil {
			// Unknown is not valid: the device reconnects and is checked
			// afresh.
			s.log.Warn("checking a new session's credential again; disconnecting it", "device", clientID, "err", err)
			stale = true
		}
		if stale && s.broker.DisconnectStale(func(_, cr string) bool { return cr == cred }, clientID) > 0 {
			s.log.Info("device session ended: its key was withdrawn as it connected", "device", clientID)
		}
	})
}

// sessionStale reads the registry to tell whether c still opens a session
// of deviceID.
func (s *Server) sessionStale(ctx context.Context, deviceID string, c credential) (bool, error) {
	var dev *wire.Device
	d, err := s.reg.Record(ctx, deviceID)
	switch {
	case err == nil:
		dev = &d
	case !errors.Is(err, registry.ErrNotFound):
		return false, err
	}
	if deviceStale(c, dev) {
		return true, nil
	}
	if c.kind != credPolicyKey {
		return false, nil
	}
	var pol *registry.Policy
	p, err := s.reg.Policy(ctx, c.policy)
	switch {
	case err == nil:
		pol = &p
	case !errors.Is(err, registry.ErrNotFound):
		return false, err
	}
	return policyStale(c.policy, c.fp, pol, registry.DeviceConnect), nil
}

// requestKey is the fingerprint of the key of p the request's token is
// signed with; authService accepted the token.
func requestKey(h http.Header, p registry.Policy) string {
	tok, err := sas.ParseToken(h.Get("Authorization"))
	if err != nil {
		return ""
	}
	return keyFP(signedWith(tok, p.PrimaryKey, p.SecondaryKey))
}

// streamKeyValid reports whether the key inv's service used still grants
// ServiceConnect, reading the policy again only if the registry changed
// since the request was checked: a change that landed before the stream
// was tracked found nothing to end.
func (s *Server) streamKeyValid(ctx context.Context, inv *invocation) bool {
	if inv.epoch == s.keys.epoch.Load() {
		return true
	}
	ctx, cancel := ctxTimeout(ctx)
	defer cancel()
	p, err := s.reg.Policy(ctx, inv.policy)
	if errors.Is(err, registry.ErrNotFound) {
		return false
	}
	if err != nil {
		// The change that moved the epoch has passed: unknown is refused.
		s.log.Warn("checking a stream's key again", "policy", inv.policy, "err", err)
		return false
	}
	return !policyStale(inv.policy, inv.key, &p, registry.ServiceConnect)
}
