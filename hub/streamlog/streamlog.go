// Package streamlog keeps the hub's stream logs: one record per stream
// invocation, in a JetStream stream, so that every node writes and any
// node reads, and records outlive the node that wrote them.
package streamlog

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

// StreamName is the JetStream stream holding the records.
const StreamName = "TETHER_STREAM_LOGS"

// subjectPrefix; the last token is the device, so a reader can filter on
// one device without scanning the others.
const subjectPrefix = "tether.streamlog."

// Options configure a Store.
type Options struct {
	// Retention is how long records are kept; default 7 days.
	Retention time.Duration
	// Replicas of the stream when it is created; default 1.
	Replicas int
}

// Store appends and reads stream-log records.
type Store struct {
	js jetstream.JetStream
}

// Open creates the JetStream stream if it is missing, or updates its
// retention if it changed.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Retention <= 0 {
		opts.Retention = 7 * 24 * time.Hour
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Tether stream logs: one record per stream invocation",
		Subjects:    []string{subjectPrefix + ">"},
		MaxAge:      opts.Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("streamlog: creating stream %s: %w", StreamName, err)
	}
	return &Store{js: js}, nil
}

// Append stores one record, keyed by its device.
func (s *Store) Append(ctx context.Context, deviceID string, rec wire.StreamLog) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := s.js.Publish(ctx, subjectPrefix+cluster.SubjectToken(deviceID), b); err != nil {
		return fmt.Errorf("streamlog: append: %w", err)
	}
	return nil
}

// Query selects records.
type Query struct {
	DeviceID string    // empty: every device
	Since    time.Time // zero: everything kept
	// Follow keeps reading new records as they come until ctx ends;
	// otherwise Read returns once it has passed the last stored record.
	Follow bool
}

// Read calls fn with each selected record, oldest first. An error from fn
// stops the read and is returned.
func (s *Store) Read(ctx context.Context, q Query, fn func(wire.StreamLog) error) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if q.DeviceID != "" {
		cfg.FilterSubjects = []string{subjectPrefix + cluster.SubjectToken(q.DeviceID)}
	}
	if !q.Since.IsZero() {
		since := q.Since
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	cons, err := s.js.OrderedConsumer(ctx, StreamName, cfg)
	if err != nil {
		return fmt.Errorf("streamlog: reading: %w", err)
	}
	if !q.Follow {
		info, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("streamlog: reading: %w", err)
		}
		if info.NumPending == 0 {
			return nil
		}
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("streamlog: reading: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				if q.Follow {
					return nil
				}
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("streamlog: reading: %w", err)
		}
		var rec wire.StreamLog
		if err := json.Unmarshal(msg.Data(), &rec); err == nil {
			if err := fn(rec); err != nil {
				return err
			}
		}
		if !q.Follow {
			md, err := msg.Metadata()
			if err != nil || md.NumPending == 0 {
				return nil
			}
		}
	}
}
