// Package bench holds the load generators, the target server, the device
// simulator, process helpers and the report of Tether's benchmark harness
// (cmd/tetherbench). It is not run by `go test`: figures need a quiet
// machine and minutes, and a test suite needs neither.
package bench

import (
	"math/bits"
	"time"
)

// histBuckets covers 0 ns to about 2^37 ns (137 s) at 64 sub-buckets per
// power of two.
const histBuckets = 64 * 32

// Hist is a log-linear latency histogram: 64 sub-buckets per power of two,
// so a quantile is within 1.6%. Each load worker keeps its own and they are
// merged at the end: 1,000 workers never contend on a lock or keep every
// sample.
type Hist struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

func bucketOf(ns int64) int {
	if ns < 128 {
		return int(max(ns, 0))
	}
	e := bits.Len64(uint64(ns)) - 7 // ns>>e is in [64, 127]
	i := 64*e + int(ns>>e)
	return min(i, histBuckets-1)
}

// valueOf is the middle of bucket i.
func valueOf(i int) time.Duration {
	if i < 128 {
		return time.Duration(i)
	}
	e := i/64 - 1
	m := int64(i - 64*e)
	return time.Duration(m<<e + (int64(1)<<e)/2)
}

// Add records one sample.
func (h *Hist) Add(d time.Duration) {
	h.counts[bucketOf(int64(d))]++
	h.n++
	h.max = max(h.max, d)
}

// Merge adds o's samples to h.
func (h *Hist) Merge(o *Hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Count is the number of samples.
func (h *Hist) Count() uint64 { return h.n }

// Quantile returns the q-quantile (0 < q <= 1); 0 when empty.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	rank = min(max(rank, 1), h.n)
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return min(valueOf(i), h.max)
		}
	}
	return h.max
}
