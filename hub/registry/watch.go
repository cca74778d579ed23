package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/wire"
)

// KeyWatch tells a node of every change to a credential, made on any node:
// a device record (its keys, type or status) or an access policy (its keys
// or rights). A node ends the sessions and streams that a change leaves
// without a valid credential; reads alone would let them run on, since a
// credential is checked only when a session or stream begins.
type KeyWatch struct {
	// Device gets the new record of a device that was written, or nil for
	// one that was deleted.
	Device func(id string, d *wire.Device)
	// Policy gets the new version of an access policy, or nil for one
	// that was deleted.
	Policy func(name string, p *Policy)
}

// WatchKeys calls w's functions for each change made after it returns,
// until stop is called. Each bucket has one goroutine, so a function sees
// the changes of its bucket in the order they were written. A record that
// cannot be read is logged and passed on as deleted: whatever it granted is
// then refused, which is the safe side.
func (r *Registry) WatchKeys(ctx context.Context, w KeyWatch) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() {
		cancel()
		wg.Wait()
	}
	for _, b := range []struct {
		kv jetstream.KeyValue
		fn func(key string, value []byte)
	}{
		{r.devices, func(id string, v []byte) {
			if v == nil {
				w.Device(id, nil)
				return
			}
			var d wire.Device
			if err := json.Unmarshal(v, &d); err != nil {
				r.log.Warn("watching the registry: unreadable device record", "device", id, "err", err)
				w.Device(id, nil)
				return
			}
			w.Device(id, &d)
		}},
		{r.policies, func(name string, v []byte) {
			if v == nil {
				w.Policy(name, nil)
				return
			}
			p, err := decodePolicy(name, v)
			if err != nil {
				r.log.Warn("watching the registry: unreadable policy", "policy", name, "err", err)
				w.Policy(name, nil)
				return
			}
			w.Policy(name, &p)
		}},
	} {
		kw, err := b.kv.WatchAll(ctx, jetstream.UpdatesOnly())
		if err != nil {
			stop()
			return nil, fmt.Errorf("registry: watching %s: %w", b.kv.Bucket(), err)
		}
		wg.Go(func() {
			forEach(ctx, kw, func(e jetstream.KeyValueEntry) bool {
				if e == nil {
					return true
				}
				name, err := cluster.ParseSubjectToken(e.Key())
				if err != nil {
					return true // not written by this package
				}
				var v []byte
				if e.Operation() == jetstream.KeyValuePut {
					v = e.Value()
				}
				b.fn(name, v)
				return true
			})
		})
	}
	return stop, nil
}

// forEach passes each entry of kw to each (nil: the watcher's marker that
// the current values are all delivered) until ctx ends, kw does or each
// returns false, and then stops kw.
func forEach(ctx context.Context, kw jetstream.KeyWatcher, each func(jetstream.KeyValueEntry) bool) {
	defer kw.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-kw.Updates():
			if !ok || !each(e) {
				return
			}
		}
	}
}
