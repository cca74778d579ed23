package registry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// errorSequence is an op that fails with each of errs in turn, errHang
// meaning "no answer until the try's context ends", then succeeds.
type errorSequence struct {
	errs  []error
	calls int
}

var errHang = errors.New("no answer") // in an errorSequence: the try waits for its context

func (s *errorSequence) op(ctx context.Context) error {
	s.calls++
	if s.calls > len(s.errs) {
		return nil
	}
	if err := s.errs[s.calls-1]; err != errHang {
		return err
	}
	<-ctx.Done()
	return fmt.Errorf("registry: get device: %w", ctx.Err())
}

// What JetStream answers while a stream elects its leader is tried again
// until it answers, each in the wrapping the registry gives it; a try
// that gets no answer at all is given up and sent again.
func TestUntilElectedWaitsOutElection(t *testing.T) {
	seq := &errorSequence{errs: []error{
		nats.ErrNoResponders,
		fmt.Errorf("registry: presence of %q: %w", "dev1", jetstream.ErrNoStreamResponse),
		&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"},
		&nats.APIError{Code: 500, ErrorCode: 10009, Description: "JetStream cluster can not handle request"},
		&jetstream.APIError{Code: 500, ErrorCode: 10118, Description: "stream is offline"},
		nats.ErrTimeout,
		jetstream.ErrConsumerLeadershipChanged,
		errHang,
	}}
	start := time.Now()
	if err := untilElected(t.Context(), 10*time.Second, 100*time.Millisecond, seq.op); err != nil {
		t.Fatalf("untilElected = %v after %d tries, want success", err, seq.calls)
	}
	if want := len(seq.errs) + 1; seq.calls != want {
		t.Fatalf("%d tries, want %d", seq.calls, want)
	}
	// Eight pauses of at most 50 ms·2ⁿ capped at 500 ms, and one try of 100 ms.
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("took %v", d)
	}
}

// Answers that are the registry's own business come back at once, the
// caller's error unchanged.
func TestUntilElectedReturnsOtherErrors(t *testing.T) {
	for _, want := range []error{
		jetstream.ErrKeyNotFound,
		fmt.Errorf("nats: wrong last sequence: 4: %w", jetstream.ErrKeyRevisionMismatch),
		jetstream.ErrKeyExists,
		&jetstream.APIError{Code: 400, ErrorCode: 10071, Description: "wrong last sequence"},
		errors.New("registry: device \"d\": stored record: unexpected end of JSON input"),
	} {
		seq := &errorSequence{errs: []error{want}}
		err := untilElected(t.Context(), 10*time.Second, time.Second, seq.op)
		if err != want || seq.calls != 1 {
			t.Errorf("%v: untilElected = %v after %d tries, want it once", want, err, seq.calls)
		}
	}
}

// A caller whose context ends while JetStream is still electing gets its
// context's error, when it ends; the wait, when the caller's context is
// longer, ends with JetStream's last answer.
func TestUntilElectedBounds(t *testing.T) {
	forever := func(context.Context) error { return nats.ErrNoResponders }

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := untilElected(ctx, 10*time.Second, time.Second, forever)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("caller's deadline first: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("caller's deadline of 300 ms: returned after %v", d)
	}

	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	if err := untilElected(ctx, 10*time.Second, time.Second, forever); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled caller: %v, want context.Canceled", err)
	}

	// A try that hangs is ended by the caller's deadline, not waited on.
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	hang := &errorSequence{errs: []error{errHang}}
	if err := untilElected(ctx, 10*time.Second, time.Minute, hang.op); !errors.Is(err, context.DeadlineExceeded) || hang.calls != 1 {
		t.Errorf("hanging try past the caller's deadline: %v after %d tries", err, hang.calls)
	}

	start = time.Now()
	err = untilElected(t.Context(), 500*time.Millisecond, time.Second, forever)
	if !errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("election longer than the wait: %v, want no responders", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("wait of 500 ms: returned after %v", d)
	}
}

// lostAnswers is a bucket whose next write goes through but whose answer
// is lost, as when the leader that stored it died before replying.
type lostAnswers struct {
	jetstream.KeyValue
	lose int
}

func (kv *lostAnswers) lost(err error) error {
	if err != nil || kv.lose == 0 {
		return err
	}
	kv.lose--
	return nats.ErrTimeout
}

func (kv *lostAnswers) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := kv.KeyValue.Create(ctx, key, value, opts...)
	return rev, kv.lost(err)
}

func (kv *lostAnswers) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	rev, err := kv.KeyValue.Update(ctx, key, value, revision)
	return rev, kv.lost(err)
}

func (kv *lostAnswers) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	return kv.lost(kv.KeyValue.Delete(ctx, key, opts...))
}

// A compare-and-set write that went through but whose answer was lost is
// the caller's success, not a race it lost to itself; one that did not go
// through, the key changed by another writer meanwhile, is still refused.
func TestElectedWriteWithLostAnswer(t *testing.T) {
	c, _ := startCluster(t, t.TempDir())
	ctx := t.Context()
	raw, err := c.JetStream().CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "lost"})
	if err != nil {
		t.Fatal(err)
	}
	lossy := &lostAnswers{KeyValue: raw}
	kv := electedKV{KeyValue: lossy, wait: 5 * time.Second, attempt: time.Second}

	lossy.lose = 1
	rev, err := kv.Create(ctx, "k", []byte("v1"))
	if err != nil || rev == 0 {
		t.Fatalf("Create with its answer lost: %d, %v", rev, err)
	}
	lossy.lose = 1
	rev2, err := kv.Update(ctx, "k", []byte("v2"), rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("Update with its answer lost: %d, %v", rev2, err)
	}
	if e, err := raw.Get(ctx, "k"); err != nil || string(e.Value()) != "v2" || e.Revision() != rev2 {
		t.Fatalf("stored: %v, %v", e, err)
	}

	// Another writer got there first: the stale update is refused.
	if _, err := raw.Put(ctx, "k", []byte("theirs")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "k", []byte("v3"), rev2); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("Update of a key changed by another writer: %v, want a revision mismatch", err)
	}
	if _, err := kv.Create(ctx, "k", []byte("theirs")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("Create of an existing key: %v, want ErrKeyExists", err)
	}

	e, err := raw.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	lossy.lose = 1
	if err := kv.Delete(ctx, "k", jetstream.LastRevision(e.Revision())); err != nil {
		t.Fatalf("Delete with its answer lost: %v", err)
	}
	if _, err := raw.Get(ctx, "k"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("after Delete: %v, want the key gone", err)
	}
}
