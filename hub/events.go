package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/wire"
)

// GET /events is the registry's change feed, for a client that shows the
// fleet live (the console): every device and its connection state as they
// are, a line saying that was all, then each change as the registry
// records it, on any node. One JSON object a line, like GET
// /streamlogs?follow=true, so that a client reads it with fetch and the
// Authorization header: an EventSource could only carry its token in the
// URL, which ends up in logs.

// DeviceEvent is one line of GET /events.
type DeviceEvent struct {
	// Type is "device" (a device's record, without keys), "deleted",
	// "presence" (its connection state), "synced" (what came before is
	// the registry as it was; changes follow) or "ping" (nothing
	// changed for eventsPing: the connection is alive).
	Type     string       `json:"type"`
	DeviceID string       `json:"deviceId,omitempty"`
	Device   *wire.Device `json:"device,omitempty"`

	ConnectionState            string     `json:"connectionState,omitempty"`
	ConnectionStateUpdatedTime *time.Time `json:"connectionStateUpdatedTime,omitempty"`
	LastActivityTime           *time.Time `json:"lastActivityTime,omitempty"`
	// Node is the hub node of the device's latest session.
	Node string `json:"node,omitempty"`
}

// eventsPing is how long the feed stays silent at most: a ping line tells
// a client (and every proxy between) that the connection still works, and
// the hub learns of a client that went away.
const eventsPing = 15 * time.Second

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryRead); err != nil {
		unauthorized(w)
		return
	}
	if s.Draining() {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, wire.CodeServerError, "this hub node is shutting down; ask for the events again in a moment")
		return
	}
	// A drain ends the feed, as it ends stream-log followers: the client
	// asks again, and its load balancer sends it to another node.
	ctx, cancel := s.follow.context(r.Context())
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var mu sync.Mutex // the watch and the pings write
	enc := json.NewEncoder(w)
	send := func(ev DeviceEvent, flush bool) error {
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(ev); err != nil {
			return err
		}
		if flush && flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	synced := false
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		t := time.NewTicker(eventsPing)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if send(DeviceEvent{Type: "ping"}, true) != nil {
					cancel()
					return
				}
			}
		}
	}()
	err := s.reg.Watch(ctx, func(c registry.Change) error {
		ev := DeviceEvent{Type: c.Kind, DeviceID: c.DeviceID, Device: c.Device}
		if c.Kind == registry.ChangeSynced {
			synced = true
		}
		if c.Kind == registry.ChangePresence {
			ev.ConnectionState, ev.Node = c.State, c.Node
			ev.ConnectionStateUpdatedTime, ev.LastActivityTime = &c.Since, &c.LastActivity
		}
		// The snapshot goes out in large writes; each change at once.
		return send(ev, synced)
	})
	cancel()
	<-pinged
	if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("registry events", "err", err, "remote", r.RemoteAddr)
	}
}
