package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/wire"
)

// presence is a device's connection state, kept apart from the identity so
// that connects and disconnects never race with registry edits or change
// the device's etag.
type presence struct {
	Session      string    `json:"session"`
	State        string    `json:"state"`
	UpdatedTime  time.Time `json:"updatedTime"`
	LastActivity time.Time `json:"lastActivity"`
}

// SetConnected records that session (one device connection, unique across
// nodes) connected or disconnected. A connect always wins. A disconnect only
// applies while the stored session is this one: when a device reconnects to
// another node before the old node notices the drop, the old session's late
// disconnect must not mark the device offline.
func (r *Registry) SetConnected(ctx context.Context, id, session string, connected bool) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	if session == "" {
		return fmt.Errorf("%w: empty session", ErrInvalid)
	}
	key := cluster.SubjectToken(id)
	now := r.now()
	if connected {
		data, _ := json.Marshal(presence{Session: session, State: wire.StateConnected, UpdatedTime: now, LastActivity: now})
		if _, err := r.presence.Put(ctx, key, data); err != nil {
			return fmt.Errorf("registry: presence of %q: %w", id, err)
		}
		return nil
	}
	return r.casPresence(ctx, id, func(p *presence) bool {
		if p.Session != session || p.State != wire.StateConnected {
			return false
		}
		p.State, p.UpdatedTime, p.LastActivity = wire.StateDisconnect, now, now
		return true
	})
}

// fillPresence sets d's connection fields from the presence bucket.
func (r *Registry) fillPresence(ctx context.Context, d *wire.Device) error {
	d.ConnectionState = wire.StateDisconnect
	e, err := r.presence.Get(ctx, cluster.SubjectToken(d.DeviceID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("registry: presence of %q: %w", d.DeviceID, err)
	}
	var p presence
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return fmt.Errorf("registry: presence of %q: stored record: %w", d.DeviceID, err)
	}
	if p.State == wire.StateConnected {
		d.ConnectionState = wire.StateConnected
	}
	d.ConnectionStateUpdatedTime = p.UpdatedTime
	d.LastActivityTime = p.LastActivity
	return nil
}

// ClearSessions marks Disconnected every device whose stored session stale
// reports true. A node that crashed never wrote its disconnects; when it
// comes back it clears what its previous life left, so devices do not show
// Connected until they happen to reconnect. Each entry is cleared with
// compare-and-set, so a session that reconnected meanwhile is kept.
func (r *Registry) ClearSessions(ctx context.Context, stale func(session string) bool) (int, error) {
	keys, err := r.presence.ListKeys(ctx)
	if err != nil {
		return 0, fmt.Errorf("registry: listing presence: %w", err)
	}
	defer keys.Stop()
	n := 0
	for key := range keys.Keys() {
		e, err := r.presence.Get(ctx, key)
		if err != nil {
			continue // deleted meanwhile
		}
		var p presence
		if json.Unmarshal(e.Value(), &p) != nil || p.State != wire.StateConnected || !stale(p.Session) {
			continue
		}
		p.State, p.UpdatedTime = wire.StateDisconnect, time.Now().UTC()
		data, _ := json.Marshal(p)
		if _, err := r.presence.Update(ctx, key, data, e.Revision()); err == nil {
			n++
		}
	}
	return n, ctx.Err()
}

// Touch records activity of a device's session (it answered a stream
// request, say) in lastActivityTime. It changes nothing when that session
// is no longer the stored one.
func (r *Registry) Touch(ctx context.Context, id, session string) error {
	return r.casPresence(ctx, id, func(p *presence) bool {
		if p.Session != session {
			return false
		}
		p.LastActivity = r.now()
		return true
	})
}

// casPresence reads a device's presence, lets change edit it (false: leave
// it as it is) and writes it back with compare-and-set, reading again when
// another writer got there first. A device without presence is left alone.
func (r *Registry) casPresence(ctx context.Context, id string, change func(*presence) bool) error {
	key := cluster.SubjectToken(id)
	for range maxAttempts {
		e, err := r.presence.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("registry: presence of %q: %w", id, err)
		}
		var p presence
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return fmt.Errorf("registry: presence of %q: stored record: %w", id, err)
		}
		if !change(&p) {
			return nil
		}
		data, _ := json.Marshal(p)
		_, err = r.presence.Update(ctx, key, data, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("registry: presence of %q: %w", id, err)
		}
		return nil
	}
	return fmt.Errorf("%w: presence of %q: too many concurrent writes", ErrPrecondition, id)
}
