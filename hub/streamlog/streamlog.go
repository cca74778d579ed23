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

// defaultRetention is Options.Retention's default.
const defaultRetention = 7 * 24 * time.Hour

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
	_, err := createStream(ctx, js, StreamName, "Tether stream logs: one record per stream invocation", subjectPrefix, opts)
	if err != nil {
		return nil, err
	}
	return &Store{js: js}, nil
}

// createStream creates or updates a JetStream stream of this package:
// the subjects under prefix, kept for opts' retention.
func createStream(ctx context.Context, js jetstream.JetStream, name, desc, prefix string, opts Options) (jetstream.Stream, error) {
	if opts.Retention <= 0 {
		opts.Retention = defaultRetention
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: desc,
		Subjects:    []string{prefix + ">"},
		MaxAge:      opts.Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("streamlog: creating stream %s: %w", name, err)
	}
	return st, nil
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
	// After selects the records after the one with this sequence
	// (wire.StreamLog.Sequence): where a reader that lost its connection
	// left off. Zero: from the first.
	After uint64
	// Last keeps only the last Last records of those selected; zero or
	// less keeps them all.
	Last int
	// Follow keeps reading new records as they come until ctx ends;
	// otherwise Read returns once it has passed the last stored record.
	Follow bool
}

// Read calls fn with each selected record, oldest first, its Sequence
// set. An error from fn stops the read and is returned.
func (s *Store) Read(ctx context.Context, q Query, fn func(wire.StreamLog) error) error {
	var filter []string
	if q.DeviceID != "" {
		filter = []string{subjectPrefix + cluster.SubjectToken(q.DeviceID)}
	}
	start := q.After + 1
	if q.Last > 0 {
		from, err := s.lastStart(ctx, filter, q.Last)
		if err != nil {
			return fmt.Errorf("streamlog: reading: %w", err)
		}
		start = max(start, from)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filter, DeliverPolicy: jetstream.DeliverAllPolicy}
	// A start time and a start sequence exclude each other in a consumer:
	// with both, the sequence starts it and the time is checked on each
	// record. The time selects a suffix of the records, as Last does, so
	// the two together are the last Last of the records since then.
	since := q.Since
	switch {
	case start > 1:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = start
	case !since.IsZero():
		t := since
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &t
		since = time.Time{} // the consumer checks it
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
		md, mdErr := msg.Metadata()
		var rec wire.StreamLog
		if mdErr == nil && json.Unmarshal(msg.Data(), &rec) == nil && !md.Timestamp.Before(since) {
			rec.Sequence = md.Sequence.Stream
			if err := fn(rec); err != nil {
				return err
			}
		}
		if !q.Follow && (mdErr != nil || md.NumPending == 0) {
			return nil
		}
	}
}

// lastStart is the sequence from which the stream holds n records that
// match filter (nil: all), or its first sequence when it holds fewer. The
// records are only appended and only expire from the front, so without a
// filter their sequences are contiguous and this is arithmetic; with one
// it counts the matches from points further and further back, doubling
// the distance, so that a device with few records among many costs a few
// counts, not a read of everything kept.
func (s *Store) lastStart(ctx context.Context, filter []string, n int) (uint64, error) {
	st, err := s.js.Stream(ctx, StreamName)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return last + 1, nil
	}
	want := uint64(n)
	if filter == nil {
		if last-first+1 <= want {
			return first, nil
		}
		return last - want + 1, nil
	}
	for span := want; ; span *= 2 {
		from := first
		if last-first+1 > span {
			from = last - span + 1
		}
		count, err := s.countFrom(ctx, filter, from)
		if err != nil {
			return 0, err
		}
		if count <= want {
			if from == first || count == want {
				return from, nil
			}
			continue
		}
		// Too many: skip the surplus, from the start of this span.
		return s.skip(ctx, filter, from, count-want)
	}
}

// countFrom counts the records from sequence from on that match filter.
func (s *Store) countFrom(ctx context.Context, filter []string, from uint64) (uint64, error) {
	cons, err := s.js.OrderedConsumer(ctx, StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: filter, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
	if err != nil {
		return 0, err
	}
	info := cons.CachedInfo()
	defer s.js.DeleteConsumer(context.WithoutCancel(ctx), StreamName, info.Name)
	return info.NumPending, nil
}

// skip returns the sequence of the record that follows the first n records
// from sequence from on that match filter.
func (s *Store) skip(ctx context.Context, filter []string, from, n uint64) (uint64, error) {
	cons, err := s.js.OrderedConsumer(ctx, StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: filter, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
	if err != nil {
		return 0, err
	}
	defer s.js.DeleteConsumer(context.WithoutCancel(ctx), StreamName, cons.CachedInfo().Name)
	it, err := cons.Messages()
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var seq uint64
	for range n {
		msg, err := it.Next()
		if err != nil {
			return 0, err
		}
		md, err := msg.Metadata()
		if err != nil {
			return 0, err
		}
		seq = md.Sequence.Stream
	}
	return seq + 1, nil
}
