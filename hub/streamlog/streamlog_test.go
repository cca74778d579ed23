package streamlog

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T) *Store {
	t.Helper()
	cl, err := cluster.Start(t.Context(), cluster.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	s, err := Open(t.Context(), cl.JetStream(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rec(desc string, at time.Time) wire.StreamLog {
	return wire.StreamLog{Time: at, OperationName: "invoke", Category: "DeviceStreams", ResultDescription: desc}
}

func readAll(t *testing.T, s *Store, q Query) []string {
	t.Helper()
	var got []string
	if err := s.Read(t.Context(), q, func(r wire.StreamLog) error {
		got = append(got, r.ResultDescription)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestReadFilters(t *testing.T) {
	s := open(t)
	ctx := t.Context()
	if got := readAll(t, s, Query{}); len(got) != 0 {
		t.Fatalf("empty store read %v", got)
	}
	now := time.Now()
	for _, r := range []struct{ dev, desc string }{{"a", "a1"}, {"b.x*", "b1"}, {"a", "a2"}} {
		if err := s.Append(ctx, r.dev, rec(r.desc, now)); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, s, Query{}); len(got) != 3 || got[0] != "a1" || got[2] != "a2" {
		t.Fatalf("all: %v", got)
	}
	if got := readAll(t, s, Query{DeviceID: "a"}); len(got) != 2 || got[1] != "a2" {
		t.Fatalf("device a: %v", got)
	}
	if got := readAll(t, s, Query{DeviceID: "b.x*"}); len(got) != 1 || got[0] != "b1" {
		t.Fatalf("device b.x*: %v", got)
	}
	if got := readAll(t, s, Query{Since: time.Now().Add(time.Hour)}); len(got) != 0 {
		t.Fatalf("since the future: %v", got)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.Read(ctx, Query{}, func(wire.StreamLog) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("fn error: %v after %d", err, n)
	}
}

func TestFollow(t *testing.T) {
	s := open(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.Append(ctx, "a", rec("old", time.Now())); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	done := make(chan error, 1)
	fctx, fcancel := context.WithCancel(ctx)
	go func() {
		done <- s.Read(fctx, Query{DeviceID: "a", Follow: true}, func(r wire.StreamLog) error {
			got <- r.ResultDescription
			return nil
		})
	}()
	if d := <-got; d != "old" {
		t.Fatalf("first: %q", d)
	}
	if err := s.Append(ctx, "b", rec("other device", time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, "a", rec("new", time.Now())); err != nil {
		t.Fatal(err)
	}
	if d := <-got; d != "new" {
		t.Fatalf("followed: %q", d)
	}
	fcancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}
