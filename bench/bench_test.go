package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/color"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// These tests check the harness's own parts in milliseconds; they measure
// nothing (see cmd/tetherbench for that).

func TestHistQuantiles(t *testing.T) {
	var h Hist
	for i := 1; i <= 1000; i++ {
		h.Add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.Quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d < -0.02 || d > 0.02 {
			t.Errorf("q%.2f = %v, want %v within 2%%", c.q, got, c.want)
		}
	}
	var m Hist
	m.Merge(&h)
	if m.Count() != 1000 || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Errorf("merge: %d samples, median %v", m.Count(), m.Quantile(0.5))
	}
	for _, ns := range []int64{0, 1, 127, 128, 255, 256, 1 << 20, 1 << 36} {
		if v := int64(valueOf(bucketOf(ns))); v < ns*98/100 || v > ns*102/100+1 {
			t.Errorf("bucket of %d holds %d", ns, v)
		}
	}
}

func TestLoadsAgainstTarget(t *testing.T) {
	tg, err := StartTarget("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx := context.Background()
	dial := TCPDialer(tg.Addr())
	if h, err := RTT(ctx, dial, 64, 50*time.Millisecond, 20); err != nil || h.Count() == 0 {
		t.Fatalf("RTT: %v, %d samples", err, h.Count())
	}
	if s := Setup(ctx, dial, 2, 50*time.Millisecond, 10); s.OK == 0 || s.Errors != 0 {
		t.Fatalf("Setup: %+v", s)
	}
	if m := Many(ctx, dial, 4, 1024, 2, 50*time.Millisecond, nil); m.Opened != 4 || m.Msgs == 0 {
		t.Fatalf("Many: %+v", m)
	}
	for _, rev := range []bool{false, true} {
		if g, err := Bulk(ctx, dial, tg, rev, 10*time.Millisecond, 50*time.Millisecond, nil); err != nil || g <= 0 {
			t.Fatalf("Bulk reverse=%v: %v Gbit/s, %v", rev, g, err)
		}
	}
}

func TestPlotPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.png")
	err := PlotPNG(path, "test", []Series{{"a", color.RGBA{255, 0, 0, 255}}, {"b", color.RGBA{0, 0, 255, 255}}},
		[]Panel{{Title: "x", Groups: []string{"g1", "g2"}, Values: [][]float64{{1, 2}, {3, -1}}}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDelayHoldsEachDirection(t *testing.T) {
	tg, err := StartTarget("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	const hold = 20 * time.Millisecond
	d, err := StartDelay("127.0.0.1:0", tg.Addr(), hold)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	dial := TCPDialer(d.Addr())
	took, err := FirstByte(ctx, dial)
	if err != nil {
		t.Fatal(err)
	}
	// The handshake's round trip, the byte's way there and its echo's
	// way back.
	if took < 4*hold || took > 4*hold+time.Second {
		t.Errorf("first byte through the link after %v, want a little over %v", took, 4*hold)
	}

	// Many small writes come back whole and in order, and a half-close
	// crosses the link after the bytes before it.
	c, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var sent bytes.Buffer
	sent.WriteByte(ModeEcho)
	for i := range 500 {
		fmt.Fprintf(&sent, "message %d;", i)
	}
	go func() {
		b := sent.Bytes()
		for len(b) > 0 {
			n := min(len(b), 7)
			c.Write(b[:n])
			b = b[n:]
		}
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent.Bytes()) {
		t.Errorf("echoed %d bytes, not the %d sent in order", len(got), sent.Len())
	}
	if d.Accepted() != 2 {
		t.Errorf("the link accepted %d connections, want 2", d.Accepted())
	}
}

func TestDelayCutsWhenTheFarSideIsGone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	d, err := StartDelay("127.0.0.1:0", addr, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := FirstByte(context.Background(), TCPDialer(d.Addr())); err == nil {
		t.Fatal("a stream through a link to nothing echoed")
	}
}

func TestStallFillsAndHolds(t *testing.T) {
	tg, err := StartTarget("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	res := Stall(context.Background(), TCPDialer(tg.Addr()), StallConfig{N: 3, OpenConc: 2, Rate: 64 << 20, Quiet: 200 * time.Millisecond, Limit: 20 * time.Second}, nil)
	defer res.Close()
	if res.Opened != 3 || res.Errors != 0 {
		t.Fatalf("Stall: %d opened, %d errors (%v)", res.Opened, res.Errors, res.FirstErr)
	}
	for i, w := range res.Written {
		if w <= 0 {
			t.Errorf("stream %d: wrote %d bytes", i, w)
		}
	}
	// The target still holds them: a new echo works beside them.
	if _, err := FirstByte(context.Background(), TCPDialer(tg.Addr())); err != nil {
		t.Fatal(err)
	}
}

func TestStallCountsTheStreamsThePathCut(t *testing.T) {
	// A path that takes the mode byte, then resets the connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var b [1]byte
			io.ReadFull(c, b[:])
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	res := Stall(context.Background(), TCPDialer(ln.Addr().String()), StallConfig{N: 2, OpenConc: 1, Quiet: 200 * time.Millisecond, Limit: 20 * time.Second}, nil)
	defer res.Close()
	if res.Opened != 0 || res.Errors != 2 || res.FirstErr == nil || len(res.Written) != 0 {
		t.Fatalf("Stall on a path that cuts: %d held, %d errors (%v), %d written", res.Opened, res.Errors, res.FirstErr, len(res.Written))
	}
}

func TestManyStopsOpeningAtTheFirstError(t *testing.T) {
	tg, err := StartTarget("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	var dials atomic.Int64
	limited := func(ctx context.Context) (net.Conn, error) {
		if dials.Add(1) > 5 {
			return nil, errors.New("out of descriptors")
		}
		return TCPDialer(tg.Addr())(ctx)
	}
	m := ManyWith(context.Background(), limited, ManyConfig{N: 50, Size: 64, OpenConc: 1, Dur: 50 * time.Millisecond, StopOnError: true})
	if m.Opened != 5 || m.OpenErr == nil || m.Msgs == 0 {
		t.Fatalf("ManyWith: %d opened, open error %v, %d messages", m.Opened, m.OpenErr, m.Msgs)
	}
	if dials.Load() != 6 {
		t.Errorf("%d dials, want 6: the opening goes on after the first error", dials.Load())
	}
}
