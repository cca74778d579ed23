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
	// Takeover outlives the sessions it counts: a connect keeps it.
	Takeover *takeoverLog `json:"takeover,omitempty"`
	// ClientType is the DeviceClientType the session's connection named
	// (wire.ClientType); a disconnect keeps it, for the device's document.
	ClientType string `json:"clientType,omitempty"`
}

// takeoverLog counts the sessions of a device that a newer connection
// took over. Counts per minute, not times: a pair of devices with one key
// and no back-off (an Azure SDK retries at once) take over thousands of
// times an hour, and the record must stay small however often.
type takeoverLog struct {
	Last      time.Time `json:"last"`
	Displaced string    `json:"displaced"` // remote address of the replaced connection
	By        string    `json:"by"`        // and of the one that replaced it
	// Counts[m%60] is the number of takeovers in minute m (Unix time /
	// 60) for the 60 minutes up to Minute; older minutes count nothing.
	Minute int64 `json:"minute"`
	Counts []int `json:"counts"`
}

// add counts n takeovers at now, the last of them from displaced to by.
func (l *takeoverLog) add(now time.Time, n int, displaced, by string) {
	m := now.Unix() / 60
	if len(l.Counts) != 60 {
		l.Counts, l.Minute = make([]int, 60), m
	}
	if m > l.Minute {
		// Minutes without takeovers since the last one count nothing;
		// their slots still hold what they counted an hour before.
		for i := l.Minute + 1; i <= m && i <= l.Minute+60; i++ {
			l.Counts[i%60] = 0
		}
		l.Minute = m
	}
	// A clock that went back still counts in the newest minute.
	l.Counts[l.Minute%60] += n
	l.Last, l.Displaced, l.By = now, displaced, by
}

// lastHour is the number of takeovers in the 60 minutes up to now's.
func (l *takeoverLog) lastHour(now time.Time) int {
	if len(l.Counts) != 60 {
		return 0
	}
	m := now.Unix() / 60
	n := 0
	for i := max(m-59, l.Minute-59); i <= min(m, l.Minute); i++ {
		n += l.Counts[i%60]
	}
	return n
}

// SetConnected records that session (one device connection, unique across
// nodes) connected or disconnected. A connect always wins. A disconnect only
// applies while the stored session is this one: when a device reconnects to
// another node before the old node notices the drop, the old session's late
// disconnect must not mark the device offline.
func (r *Registry) SetConnected(ctx context.Context, id, session string, connected bool) error {
	if connected {
		return r.SetClientConnected(ctx, id, session, "")
	}
	if err := ValidateID(id); err != nil {
		return err
	}
	if session == "" {
		return fmt.Errorf("%w: empty session", ErrInvalid)
	}
	now := r.now()
	return r.casPresence(ctx, id, func(p *presence) bool {
		if p.Session != session || p.State != wire.StateConnected {
			return false
		}
		p.State, p.UpdatedTime, p.LastActivity = wire.StateDisconnect, now, now
		return true
	})
}

// SetClientConnected is SetConnected's connect of a device whose
// connection named itself clientType (wire.ClientType), which the
// device's document shows from then on as DeviceClientType.
func (r *Registry) SetClientConnected(ctx context.Context, id, session, clientType string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	if session == "" {
		return fmt.Errorf("%w: empty session", ErrInvalid)
	}
	if len(clientType) > wire.MaxClientType {
		return fmt.Errorf("%w: client type of %d bytes, over %d", ErrInvalid, len(clientType), wire.MaxClientType)
	}
	now := r.now()
	return r.upsertPresence(ctx, id, func(p *presence) {
		p.Session, p.State, p.UpdatedTime, p.LastActivity = session, wire.StateConnected, now, now
		p.ClientType = clientType
	})
}

// RecordTakeover counts a takeover of device id's session: the connection
// from remote address by replaced the one from displaced. It returns the
// takeovers of the last hour, this one included. A device without presence
// (deleted meanwhile) is left alone, and counts 0.
func (r *Registry) RecordTakeover(ctx context.Context, id, displaced, by string) (lastHour int, err error) {
	return r.RecordTakeovers(ctx, id, 1, displaced, by)
}

// RecordTakeovers is RecordTakeover for n takeovers at once, the last of
// them from displaced to by: those of a device that a hub node saw come
// faster than it could write them.
func (r *Registry) RecordTakeovers(ctx context.Context, id string, n int, displaced, by string) (lastHour int, err error) {
	if err := ValidateID(id); err != nil {
		return 0, err
	}
	if n < 1 {
		return 0, fmt.Errorf("%w: %d takeovers", ErrInvalid, n)
	}
	now := r.now()
	err = r.casPresence(ctx, id, func(p *presence) bool {
		if p.Takeover == nil {
			p.Takeover = &takeoverLog{}
		}
		p.Takeover.add(now, n, displaced, by)
		lastHour = p.Takeover.lastHour(now)
		return true
	})
	if err != nil {
		return 0, err
	}
	return lastHour, nil
}

// fillPresence sets d's connection fields from the presence bucket.
func (r *Registry) fillPresence(ctx context.Context, d *wire.Device) error {
	d.ConnectionState = wire.StateDisconnect
	d.Takeovers = nil
	d.DeviceClientType = ""
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
	d.DeviceClientType = p.ClientType
	if t := p.Takeover; t != nil {
		d.Takeovers = &wire.Takeovers{LastHour: t.lastHour(r.now()), Last: t.Last, DisplacedRemote: t.Displaced, ByRemote: t.By}
	}
	return nil
}

// ClearSessions marks Disconnected every device whose stored session stale
// reports true. A node that crashed never wrote its disconnects; when it
// comes back it clears what its previous life left, so devices do not show
// Connected until they happen to reconnect. Each entry is cleared with
// compare-and-set, so a session that reconnected meanwhile is kept.
func (r *Registry) ClearSessions(ctx context.Context, stale func(session string) bool) (int, error) {
	keys, err := listKeys(ctx, r.presence)
	if err != nil {
		return 0, fmt.Errorf("registry: listing presence: %w", err)
	}
	n := 0
	for _, key := range keys {
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

// upsertPresence is casPresence for a change that always applies, to the
// stored presence or to a new one.
func (r *Registry) upsertPresence(ctx context.Context, id string, change func(*presence)) error {
	key := cluster.SubjectToken(id)
	for range maxAttempts {
		var p presence
		e, err := r.presence.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			change(&p)
			data, _ := json.Marshal(p)
			_, err = r.presence.Create(ctx, key, data)
		case err != nil:
			return fmt.Errorf("registry: presence of %q: %w", id, err)
		default:
			// A record this version cannot read is replaced: the
			// change must win.
			if json.Unmarshal(e.Value(), &p) != nil {
				p = presence{}
			}
			change(&p)
			data, _ := json.Marshal(p)
			_, err = r.presence.Update(ctx, key, data, e.Revision())
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("registry: presence of %q: %w", id, err)
		}
		return nil
	}
	return fmt.Errorf("%w: presence of %q: too many concurrent writes", ErrPrecondition, id)
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
