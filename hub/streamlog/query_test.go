package streamlog

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

// readSeqs is readAll with each record's sequence.
func readSeqs(t *testing.T, s *Store, q Query) (descs []string, seqs []uint64) {
	t.Helper()
	if err := s.Read(t.Context(), q, func(r wire.StreamLog) error {
		descs = append(descs, r.ResultDescription)
		seqs = append(seqs, r.Sequence)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return descs, seqs
}

// TestReadLast: Last keeps the newest records of those selected, oldest
// first, for every device or one, alone or with a start time; a device
// with few records among many gets its own last ones.
func TestReadLast(t *testing.T) {
	s := open(t)
	ctx := t.Context()
	// a0..a2 early, then b0..b39 with a3 in their middle, then a4.
	var want []string
	appendRec := func(dev, desc string) {
		t.Helper()
		if err := s.Append(ctx, dev, rec(desc, time.Now())); err != nil {
			t.Fatal(err)
		}
		want = append(want, desc)
	}
	for i := range 3 {
		appendRec("a", fmt.Sprintf("a%d", i))
	}
	for i := range 40 {
		if i == 20 {
			appendRec("a", "a3")
		}
		appendRec("b", fmt.Sprintf("b%d", i))
	}
	appendRec("a", "a4")

	for _, tc := range []struct {
		q    Query
		want []string
	}{
		{Query{Last: 3}, []string{"b38", "b39", "a4"}},
		{Query{Last: 1}, []string{"a4"}},
		{Query{Last: 1000}, want},
		{Query{DeviceID: "a", Last: 2}, []string{"a3", "a4"}},
		{Query{DeviceID: "a", Last: 4}, []string{"a1", "a2", "a3", "a4"}},
		{Query{DeviceID: "a", Last: 5}, []string{"a0", "a1", "a2", "a3", "a4"}},
		{Query{DeviceID: "a", Last: 50}, []string{"a0", "a1", "a2", "a3", "a4"}},
		{Query{DeviceID: "b", Last: 2}, []string{"b38", "b39"}},
		{Query{DeviceID: "c", Last: 2}, nil},
		{Query{Last: 3, Since: time.Now().Add(time.Hour)}, nil},
	} {
		got, _ := readSeqs(t, s, tc.q)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%+v: got %v, want %v", tc.q, got, tc.want)
		}
	}
}

// TestReadLastSince: with a start time too, Last counts only the records
// since then.
func TestReadLastSince(t *testing.T) {
	s := open(t)
	ctx := t.Context()
	for _, d := range []string{"old1", "old2"} {
		if err := s.Append(ctx, "a", rec(d, time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	// The store's own clock decides the start time: take it from the
	// last old record, so that the new ones are after it whatever the
	// clock's resolution.
	_, seqs := readSeqs(t, s, Query{})
	if len(seqs) != 2 || seqs[0] == 0 || seqs[1] <= seqs[0] {
		t.Fatalf("sequences %v", seqs)
	}
	var since time.Time
	afterNewest(t, s, &since)
	for _, d := range []string{"new1", "new2"} {
		if err := s.Append(ctx, "a", rec(d, time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []Query{{Since: since, Last: 3}, {Since: since, Last: 3, DeviceID: "a"}} {
		if got, _ := readSeqs(t, s, q); !slices.Equal(got, []string{"new1", "new2"}) {
			t.Errorf("%+v: got %v, want the two new ones", q, got)
		}
	}
	if got, _ := readSeqs(t, s, Query{Since: since, Last: 1}); !slices.Equal(got, []string{"new2"}) {
		t.Errorf("since, last 1: got %v", got)
	}
}

// afterNewest sets *since to a moment after every record stored now,
// by the store's clock: the stored time of the newest record, plus a
// nanosecond.
func afterNewest(t *testing.T, s *Store, since *time.Time) {
	t.Helper()
	st, err := s.js.Stream(t.Context(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	*since = info.State.LastTime.Add(time.Nanosecond)
}

// TestReadAfter: each record carries its sequence, and a reader that
// resumes after the last one it saw gets exactly the ones it missed,
// following or not.
func TestReadAfter(t *testing.T) {
	s := open(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for i := range 4 {
		if err := s.Append(ctx, []string{"a", "b"}[i%2], rec(fmt.Sprintf("r%d", i), time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	descs, seqs := readSeqs(t, s, Query{})
	if len(seqs) != 4 || !slices.IsSorted(seqs) || slices.Contains(seqs, 0) || seqs[0] == seqs[1] {
		t.Fatalf("sequences %v of %v", seqs, descs)
	}
	if got, _ := readSeqs(t, s, Query{After: seqs[1]}); !slices.Equal(got, []string{"r2", "r3"}) {
		t.Errorf("after %d: %v", seqs[1], got)
	}
	if got, _ := readSeqs(t, s, Query{After: seqs[0], DeviceID: "a"}); !slices.Equal(got, []string{"r2"}) {
		t.Errorf("device a after %d: %v", seqs[0], got)
	}
	if got, _ := readSeqs(t, s, Query{After: seqs[3]}); got != nil {
		t.Errorf("after the last: %v", got)
	}
	if got, _ := readSeqs(t, s, Query{After: seqs[0], Last: 1}); !slices.Equal(got, []string{"r3"}) {
		t.Errorf("after, last 1: %v", got)
	}

	// A follower resumed after r3 sees r4 only, once.
	got := make(chan wire.StreamLog, 4)
	done := make(chan error, 1)
	fctx, fcancel := context.WithCancel(ctx)
	go func() {
		done <- s.Read(fctx, Query{After: seqs[3], Follow: true}, func(r wire.StreamLog) error {
			got <- r
			return nil
		})
	}()
	if err := s.Append(ctx, "a", rec("r4", time.Now())); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.ResultDescription != "r4" || r.Sequence != seqs[3]+1 {
		t.Fatalf("followed %q at %d, want r4 at %d", r.ResultDescription, r.Sequence, seqs[3]+1)
	}
	if err := s.Append(ctx, "a", rec("r5", time.Now())); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.ResultDescription != "r5" {
		t.Fatalf("followed %q, want r5", r.ResultDescription)
	}
	fcancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}
