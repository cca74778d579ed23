package streamlog

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/wire"
)

// openJournals starts a store on dir with the journals of nodes n1 and n2.
func openJournals(t *testing.T, dir string) (cl *cluster.Cluster, s *Store, n1, n2 *Journal) {
	t.Helper()
	cl, err := cluster.Start(t.Context(), cluster.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s, err = Open(t.Context(), cl.JetStream(), Options{}); err != nil {
		t.Fatal(err)
	}
	if n1, err = OpenJournal(t.Context(), cl.JetStream(), "n1", Options{}); err != nil {
		t.Fatal(err)
	}
	if n2, err = OpenJournal(t.Context(), cl.JetStream(), "n2", Options{}); err != nil {
		t.Fatal(err)
	}
	return cl, s, n1, n2
}

// interrupted is a record as the hub writes it for an entry.
func interrupted(e Entry) wire.StreamLog {
	return wire.StreamLog{Time: e.Start, OperationName: "invoke", ResultDescription: e.StreamID + " of " + e.Node}
}

// TestJournalRecover: the entries a node's earlier life left are written
// as records at the next start and then gone; an entry ended (its stream
// recorded) is not; another node's entries stay its own; the data folder
// keeps them across a restart of the store.
func TestJournalRecover(t *testing.T) {
	dir := t.TempDir()
	cl, _, n1, n2 := openJournals(t, dir)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	begin := func(j *Journal, node, id string) *Pending {
		t.Helper()
		p, err := j.Begin(Entry{Node: node, StreamID: id, DeviceID: "dev1", Name: "ssh", Start: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	open1 := begin(n1, "n1-old", "OPEN1")
	begin(n1, "n1-old", "OPEN2")
	// Ended at once, before Begin's answer came back: End waits for it.
	if err := begin(n1, "n1-old", "ENDED").End(ctx); err != nil {
		t.Fatalf("End: %v", err)
	}
	other := begin(n2, "n2-old", "OTHER")
	// Both on disk before the store stops.
	for _, p := range []*Pending{open1, other} {
		select {
		case <-p.ack.Ok():
		case err := <-p.ack.Err():
			t.Fatal(err)
		}
	}
	cl.Close()

	cl, s, n1, n2 := openJournals(t, dir)
	defer cl.Close()
	n, err := n1.Recover(ctx, s, "n1-new", interrupted)
	if err != nil || n != 2 {
		t.Fatalf("Recover = %d, %v; want the 2 entries still open", n, err)
	}
	got := readAll(t, s, Query{})
	slices.Sort(got)
	if want := []string{"OPEN1 of n1-old", "OPEN2 of n1-old"}; !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	if n, err := n1.Recover(ctx, s, "n1-new", interrupted); err != nil || n != 0 {
		t.Errorf("second Recover = %d, %v; want nothing left", n, err)
	}
	if n, err := n2.Recover(ctx, s, "n2-new", interrupted); err != nil || n != 1 {
		t.Errorf("the other node's Recover = %d, %v; want its own entry", n, err)
	}
}

// TestJournalOwnLife: a node does not take its own entries (this life's
// streams, still open) for an earlier life's.
func TestJournalOwnLife(t *testing.T) {
	cl, s, j, _ := openJournals(t, t.TempDir())
	defer cl.Close()
	p, err := j.Begin(Entry{Node: "n1-now", StreamID: "MINE", DeviceID: "dev1", Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	<-p.ack.Ok()
	if n, err := j.Recover(t.Context(), s, "n1-now", interrupted); err != nil || n != 0 {
		t.Errorf("Recover = %d, %v; want none of this life's entries", n, err)
	}
	if got := readAll(t, s, Query{}); len(got) != 0 {
		t.Errorf("records %q written for open streams", got)
	}
}
