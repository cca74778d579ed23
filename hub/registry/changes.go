package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/wire"
)

// Change is one entry of the registry's change feed (Watch): a device's
// record, its connection state, or the end of the snapshot that starts
// the feed.
type Change struct {
	// Kind is ChangeDevice, ChangeDeleted, ChangePresence or ChangeSynced.
	Kind     string
	DeviceID string
	// Device is the record of a ChangeDevice, without its keys.
	Device *wire.Device
	// State, Since, LastActivity and Node are a ChangePresence's: the
	// connection state (wire.StateConnected or StateDisconnect), when it
	// last changed, the device's last activity, and the hub node of its
	// latest session.
	State        string
	Since        time.Time
	LastActivity time.Time
	Node         string
}

// Kinds of Change.
const (
	ChangeDevice   = "device"
	ChangeDeleted  = "deleted"
	ChangePresence = "presence"
	ChangeSynced   = "synced"
)

// Watch calls fn with every device record and connection state as they
// are, then once with ChangeSynced, then with each change made on any node
// until ctx ends or fn returns an error, which Watch returns. Both buckets
// are read by JetStream's watchers, which deliver a bucket whole far faster
// than one read per device: a console of ten thousand devices lists them
// from here. fn is called from one goroutine at a time. Keys never leave
// the registry through it.
func (r *Registry) Watch(ctx context.Context, fn func(Change) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type entry struct {
		bucket int // 0 devices, 1 presence
		e      jetstream.KeyValueEntry
	}
	entries := make(chan entry)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // before wg.Wait: the watchers stop on it
	for i, kv := range []jetstream.KeyValue{r.devices, r.presence} {
		kw, err := kv.WatchAll(ctx)
		if err != nil {
			return fmt.Errorf("registry: watching %s: %w", kv.Bucket(), err)
		}
		wg.Go(func() {
			forEach(ctx, kw, func(e jetstream.KeyValueEntry) bool {
				select {
				case entries <- entry{i, e}:
					return true
				case <-ctx.Done():
					return false
				}
			})
		})
	}
	synced := [2]bool{}
	for {
		var en entry
		select {
		case <-ctx.Done():
			return ctx.Err()
		case en = <-entries:
		}
		if en.e == nil {
			// The watcher's marker: the bucket's current values are all
			// delivered.
			synced[en.bucket] = true
			if synced[0] && synced[1] {
				if err := fn(Change{Kind: ChangeSynced}); err != nil {
					return err
				}
			}
			continue
		}
		c, ok := r.change(en.bucket, en.e)
		if !ok {
			continue
		}
		if err := fn(c); err != nil {
			return err
		}
	}
}

// change reads one watcher entry; ok is false for what this package did
// not write.
func (r *Registry) change(bucket int, e jetstream.KeyValueEntry) (c Change, ok bool) {
	id, err := cluster.ParseSubjectToken(e.Key())
	if err != nil || ValidateID(id) != nil {
		return c, false
	}
	c.DeviceID = id
	if bucket == 0 {
		if e.Operation() != jetstream.KeyValuePut {
			c.Kind = ChangeDeleted
			return c, true
		}
		var d wire.Device
		if err := json.Unmarshal(e.Value(), &d); err != nil {
			r.log.Warn("watching the registry: unreadable device record", "device", id, "err", err)
			return c, false
		}
		d.ETag = etag(e.Revision())
		d.Authentication.SymmetricKey = nil
		c.Kind, c.Device = ChangeDevice, &d
		return c, true
	}
	if e.Operation() != jetstream.KeyValuePut {
		return c, false // the device's delete, which its record reports
	}
	var p presence
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return c, false
	}
	c.Kind, c.State, c.Since, c.LastActivity = ChangePresence, wire.StateDisconnect, p.UpdatedTime, p.LastActivity
	if p.State == wire.StateConnected {
		c.State = wire.StateConnected
	}
	// A session is "node/number" (the hub's route.go).
	c.Node, _, _ = strings.Cut(p.Session, "/")
	return c, true
}
