package limit

import (
	"sync"
	"time"
)

// Backoff slows down sources that fail to authenticate. A source may fail
// a few times (free); each failure after that refuses it for a while,
// doubling from base up to max. A success resets it, and a source that has
// not failed for twice max starts again from zero. Refusing is the cheap
// path: a source in back-off costs one map lookup, not a token check.
type Backoff struct {
	free      int // failures allowed before back-off; < 0: never back off
	base, max time.Duration
	forget    time.Duration

	mu      sync.Mutex
	m       map[string]*failures
	sweepAt int
}

type failures struct {
	n     int       // failures in a row
	last  time.Time // the latest
	until time.Time // refused before this
}

// NewBackoff returns a Backoff allowing free failures before it refuses a
// source for base, then twice that after each further failure, at most
// max. free < 0 disables it.
func NewBackoff(free int, base, max time.Duration) *Backoff {
	if base <= 0 {
		base = time.Second
	}
	if max < base {
		max = base
	}
	return &Backoff{free: free, base: base, max: max, forget: 2 * max, m: make(map[string]*failures), sweepAt: sweepFloor}
}

// Wait returns how long src must still wait before its next attempt is
// heard: zero when it may try now.
func (b *Backoff) Wait(src string, now time.Time) time.Duration {
	if b.free < 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.m[src]
	if e == nil || !now.Before(e.until) {
		return 0
	}
	return e.until.Sub(now)
}

// Failed records a failed attempt from src and returns the back-off it
// starts (zero while src is within its free failures).
func (b *Backoff) Failed(src string, now time.Time) time.Duration {
	if b.free < 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.m[src]
	if e == nil {
		if len(b.m) >= b.sweepAt {
			for k, e := range b.m {
				if now.Sub(e.last) >= b.forget && !now.Before(e.until) {
					delete(b.m, k)
				}
			}
			b.sweepAt = max(sweepFloor, 2*len(b.m))
		}
		if len(b.m) >= maxEntries {
			return 0 // full of failing sources: stop tracking new ones
		}
		e = &failures{}
		b.m[src] = e
	}
	if now.Sub(e.last) >= b.forget {
		e.n = 0
	}
	e.n++
	e.last = now
	if e.n <= b.free {
		return 0
	}
	d := b.base << min(e.n-b.free-1, 30)
	if d > b.max || d <= 0 {
		d = b.max
	}
	e.until = now.Add(d)
	return d
}

// Succeeded forgets src's failures.
func (b *Backoff) Succeeded(src string) {
	if b.free < 0 {
		return
	}
	b.mu.Lock()
	delete(b.m, src)
	b.mu.Unlock()
}
