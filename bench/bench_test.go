package bench

import (
	"context"
	"image/color"
	"path/filepath"
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
