package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tether-io/tether/internal/retry"
)

// When the node that leads a bucket's stream is lost, JetStream elects
// another among the replicas. Until it has, reads and writes meet "no
// responders", a 503 "JetStream system temporarily unavailable", or no
// answer at all; a listing can hang for as long as its caller waits. None
// of that is the caller's business: the registry tries again, with
// back-off, for as long as an election takes, and answers as if nothing
// had happened.

// electionWait bounds the wait for an election. Raft gives a follower 4
// to 9 s without a heartbeat before it stands, so a leader that vanished
// without closing its routes is replaced within about that; one that shut
// down is replaced within a second or two. A caller whose context ends
// first gets its context's error.
const electionWait = 10 * time.Second

// attemptTimeout bounds one try of a read or write (and, for a listing,
// the time without a key), so that a request lost with the old leader is
// sent again rather than waited on. A healthy bucket answers in
// milliseconds.
const attemptTimeout = 2 * time.Second

// errStalled is a listing that stopped delivering keys.
var errStalled = errors.New("listing stalled")

// errAttemptTimeout is a try that got no answer within attemptTimeout.
var errAttemptTimeout = errors.New("no answer in time")

// electionCodes are the JetStream API's error codes for "no leader right
// now".
var electionCodes = map[int]bool{
	10008: true, // JetStream system temporarily unavailable
	10009: true, // JetStream cluster can not handle request
	10118: true, // stream is offline
	10119: true, // consumer is offline
	10163: true, // expected last sequence per subject temporarily unavailable
	10194: true, // stream is offline: reason
	10195: true, // consumer is offline: reason
}

// inElection reports whether err is what JetStream answers while a stream
// has no leader: worth trying again, unlike a missing key or a failed
// compare-and-set.
func inElection(err error) bool {
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, errAttemptTimeout), errors.Is(err, errStalled),
		errors.Is(err, jetstream.ErrConsumerLeadershipChanged), errors.Is(err, nats.ErrConsumerLeadershipChanged):
		return true
	}
	code, status := 0, 0
	var a *jetstream.APIError
	var b *nats.APIError
	switch {
	case errors.As(err, &a):
		code, status = int(a.ErrorCode), a.Code
	case errors.As(err, &b):
		code, status = int(b.ErrorCode), b.Code
	default:
		return false
	}
	return electionCodes[code] || status == 503
}

// untilElected runs op until it succeeds, fails for a reason other than a
// leader election, or wait has passed since the first try; then it returns
// op's last error. Each try gets attempt to answer (no limit when attempt
// is 0). A caller whose ctx ends first gets ctx's error, with op's last
// one for the log.
func untilElected(ctx context.Context, wait, attempt time.Duration, op func(ctx context.Context) error) error {
	deadline := time.Now().Add(wait)
	for n := 0; ; n++ {
		actx, cancel := context.WithCancel(ctx)
		if attempt > 0 {
			actx, cancel = context.WithTimeout(ctx, attempt)
		}
		err := op(actx)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("%w (waiting for JetStream: %v)", context.Cause(ctx), err)
		case timedOut && errors.Is(err, context.DeadlineExceeded):
			// The try's own deadline, not the caller's.
			err = fmt.Errorf("%w: %w", errAttemptTimeout, err)
		}
		if !inElection(err) {
			return err
		}
		pause := retry.Delay(n, 50*time.Millisecond, 500*time.Millisecond, rand.Int64N)
		if time.Now().Add(pause).After(deadline) {
			return fmt.Errorf("%w (JetStream still without a leader after %v)", err, wait)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (waiting for JetStream: %v)", context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

// electedKV is a bucket whose reads and writes wait out a leader election
// (untilElected). Watches are not wrapped: they follow a new leader by
// themselves.
type electedKV struct {
	jetstream.KeyValue
	wait, attempt time.Duration
}

func elected(kv jetstream.KeyValue) electedKV {
	return electedKV{KeyValue: kv, wait: electionWait, attempt: attemptTimeout}
}

func (kv electedKV) do(ctx context.Context, op func(ctx context.Context) error) error {
	return untilElected(ctx, kv.wait, kv.attempt, op)
}

func (kv electedKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	var e jetstream.KeyValueEntry
	err := kv.do(ctx, func(ctx context.Context) error {
		var err error
		e, err = kv.KeyValue.Get(ctx, key)
		return err
	})
	return e, err
}

// Put writes value whatever is stored: trying again is harmless.
func (kv electedKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	var rev uint64
	err := kv.do(ctx, func(ctx context.Context) error {
		var err error
		rev, err = kv.KeyValue.Put(ctx, key, value)
		return err
	})
	return rev, err
}

// A compare-and-set write whose try got no answer may have been applied
// all the same, the answer lost with the old leader; the next try then
// finds the key changed. The write is ours when the key now holds what we
// wrote, and the caller must not be told it lost a race with itself.

func (kv electedKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	var rev uint64
	unanswered := false
	err := kv.do(ctx, func(ctx context.Context) error {
		var err error
		rev, err = kv.KeyValue.Create(ctx, key, value, opts...)
		if unanswered && errors.Is(err, jetstream.ErrKeyExists) {
			if r, ok := kv.holds(ctx, key, value, 0); ok {
				rev, err = r, nil
			}
		}
		unanswered = unanswered || unansweredErr(ctx, err)
		return err
	})
	return rev, err
}

func (kv electedKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	var rev uint64
	unanswered := false
	err := kv.do(ctx, func(ctx context.Context) error {
		var err error
		rev, err = kv.KeyValue.Update(ctx, key, value, revision)
		if unanswered && errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if r, ok := kv.holds(ctx, key, value, revision); ok {
				rev, err = r, nil
			}
		}
		unanswered = unanswered || unansweredErr(ctx, err)
		return err
	})
	return rev, err
}

// Delete of a key at a revision finds it changed on the next try when the
// unanswered one went through; the key being gone then means it did.
func (kv electedKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	unanswered := false
	return kv.do(ctx, func(ctx context.Context) error {
		err := kv.KeyValue.Delete(ctx, key, opts...)
		if unanswered && errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if _, gerr := kv.KeyValue.Get(ctx, key); errors.Is(gerr, jetstream.ErrKeyNotFound) {
				err = nil
			}
		}
		unanswered = unanswered || unansweredErr(ctx, err)
		return err
	})
}

// unansweredErr reports whether err left a write's outcome unknown: the
// request may have reached the leader. "No responders" and the API's
// refusals say it did not.
func unansweredErr(ctx context.Context, err error) bool {
	return errors.Is(err, nats.ErrTimeout) || (errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil)
}

// holds reports whether key now holds value at a revision after after,
// and that revision.
func (kv electedKV) holds(ctx context.Context, key string, value []byte, after uint64) (uint64, bool) {
	e, err := kv.KeyValue.Get(ctx, key)
	if err != nil || e.Revision() <= after || !bytes.Equal(e.Value(), value) {
		return 0, false
	}
	return e.Revision(), true
}

// listKeys returns every key of kv. A lister stops early, without an
// error, when ctx ends; that must not pass for a complete list. One that
// delivers nothing for attemptTimeout (its consumer was on the lost
// leader) is started again, as is one JetStream refused during an
// election; a long listing that keeps delivering is not cut short.
func listKeys(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	wait, stalled := electionWait, attemptTimeout
	if e, ok := kv.(electedKV); ok {
		kv, wait, stalled = e.KeyValue, e.wait, e.attempt
	}
	var keys []string
	err := untilElected(ctx, wait, 0, func(ctx context.Context) error {
		keys = keys[:0]
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		stall := time.AfterFunc(stalled, func() { cancel(errStalled) })
		l, err := kv.ListKeys(ctx)
		if err == nil {
			for k := range l.Keys() {
				keys = append(keys, k)
				stall.Reset(stalled)
			}
			l.Stop()
		}
		stall.Stop()
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}
