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

// JournalName is the JetStream stream of the open-stream journal: one
// small entry per stream a node has open, so that a node killed without a
// word still leaves what its next start needs to write those streams'
// records ("interrupted"). An entry lives from the stream's opening to
// its record; the journal holds only streams open now, and those of
// nodes that died and did not start again yet.
const JournalName = "TETHER_OPEN_STREAMS"

// journalPrefix; the next token is the node's name (cluster.Name, the
// same across restarts), the last the stream id, so a starting node reads
// what its previous life left without scanning other nodes' entries.
const journalPrefix = "tether.openstream."

// Entry is what the journal keeps of an open stream: what its record
// needs when the node dies before writing it.
type Entry struct {
	Node     string    `json:"node"` // the node's life that opened it (cluster.Node)
	StreamID string    `json:"streamId"`
	DeviceID string    `json:"deviceId"`
	ModuleID string    `json:"moduleId,omitempty"`
	Name     string    `json:"name"` // the stream name
	Policy   string    `json:"policy,omitempty"`
	SDK      string    `json:"sdk,omitempty"`
	Service  string    `json:"service,omitempty"` // the service's address
	Start    time.Time `json:"start"`
}

// Journal is one node's part of the open-stream journal.
type Journal struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	subject string // journalPrefix + the node's name + "."
}

// OpenJournal creates the journal's JetStream stream if it is missing, or
// updates its retention, and returns the part of node name. Entries older
// than the retention (the stream logs', so a record would outlive it no
// more) go, which also clears what a node that never starts again left.
func OpenJournal(ctx context.Context, js jetstream.JetStream, name string, opts Options) (*Journal, error) {
	st, err := createStream(ctx, js, JournalName, "Tether streams open on each node, for the records of those a node's death interrupts", journalPrefix, opts)
	if err != nil {
		return nil, err
	}
	return &Journal{js: js, stream: st, subject: journalPrefix + cluster.SubjectToken(name) + "."}, nil
}

// Pending is an entry on its way to the journal.
type Pending struct {
	j   *Journal
	ack jetstream.PubAckFuture // nil: the entry could not be sent
}

// Begin sends e to the journal without waiting for the answer: a stream's
// setup pays for one message sent, not for a round trip to the store.
// What it returns is for End; an entry that could not be sent (the error
// says why) costs the stream its interrupted record should the node die.
func (j *Journal) Begin(e Entry) (*Pending, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return &Pending{j: j}, err
	}
	ack, err := j.js.PublishAsync(j.subject+cluster.SubjectToken(e.StreamID), b)
	if err != nil {
		return &Pending{j: j}, fmt.Errorf("streamlog: journal: %w", err)
	}
	return &Pending{j: j, ack: ack}, nil
}

// End removes the entry once the stream's record is written: it waits
// for Begin's answer (long since there, but for streams shorter than a
// round trip), then deletes the entry by its sequence.
func (p *Pending) End(ctx context.Context) error {
	if p == nil || p.ack == nil {
		return nil
	}
	var seq uint64
	select {
	case ack := <-p.ack.Ok():
		seq = ack.Sequence
	case err := <-p.ack.Err():
		return fmt.Errorf("streamlog: journal: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("streamlog: journal: no answer to the entry: %w", ctx.Err())
	}
	if err := p.j.stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("streamlog: journal: removing an entry: %w", err)
	}
	return nil
}

// Recover writes to store a record (made by record) for each entry an
// earlier life of this node left, that is each entry not of node (this
// life), then removes them. It is meant for a node's start, before it
// opens streams: the entries are removed by subject, all at once. It
// returns how many records it wrote.
func (j *Journal) Recover(ctx context.Context, store *Store, node string, record func(Entry) wire.StreamLog) (int, error) {
	left, err := j.left(ctx, node)
	if err != nil || len(left) == 0 {
		return 0, err
	}
	// Sent together, then waited for: a node that died with many streams
	// open starts without a round trip per stream.
	acks := make([]jetstream.PubAckFuture, 0, len(left))
	for _, e := range left {
		b, err := json.Marshal(record(e))
		if err != nil {
			return 0, err
		}
		ack, err := j.js.PublishAsync(subjectPrefix+cluster.SubjectToken(e.DeviceID), b)
		if err != nil {
			return 0, fmt.Errorf("streamlog: writing interrupted records: %w", err)
		}
		acks = append(acks, ack)
	}
	for _, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			return 0, fmt.Errorf("streamlog: writing interrupted records: %w", err)
		case <-ctx.Done():
			return 0, fmt.Errorf("streamlog: writing interrupted records: %w", ctx.Err())
		}
	}
	// Only now: a start that fails before this point finds the entries
	// again (and writes their records once more) rather than none.
	if err := j.stream.Purge(ctx, jetstream.WithPurgeSubject(j.subject+">")); err != nil {
		return len(left), fmt.Errorf("streamlog: clearing the journal: %w", err)
	}
	return len(left), nil
}

// left reads this node's entries that are not of life node.
func (j *Journal) left(ctx context.Context, node string) ([]Entry, error) {
	cons, err := j.js.OrderedConsumer(ctx, JournalName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{j.subject + ">"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("streamlog: reading the journal: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("streamlog: reading the journal: %w", err)
	}
	var out []Entry
	for pending := info.NumPending; pending > 0; {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("streamlog: reading the journal: %w", err)
		}
		var e Entry
		if json.Unmarshal(msg.Data(), &e) == nil && e.Node != node {
			out = append(out, e)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("streamlog: reading the journal: %w", err)
		}
		pending = md.NumPending
	}
	return out, nil
}
