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
//
// A Backoff made by NewRateBackoff counts a rate of failures instead (see
// there): for a source that many honest clients share, where failures in a
// row say little about any one of them.
type Backoff struct {
	free      int // failures allowed before back-off; < 0: never back off
	base, max time.Duration
	forget    time.Duration
	// rate and burst, when rate > 0, replace free: a token bucket of
	// failures (NewRateBackoff).
	rate, burst float64

	mu      sync.Mutex
	m       map[string]*failures
	sweepAt int
}

type failures struct {
	n     int       // failures in a row; by rate: back-offs in a row
	last  time.Time // the latest
	until time.Time // refused before this
	// By rate: the failures still allowed, as of at.
	tokens float64
	at     time.Time
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

// NewRateBackoff returns a Backoff that lets a source fail perSecond times
// a second, with a burst of burst failures, and refuses it for base once
// it fails faster. While refused nothing refills, so a source that keeps
// failing as fast is over its rate again at once: each such back-off is
// twice the last, at most max. One that stays within its rate for the time
// its burst takes to refill starts again from base. A success changes
// nothing: one client's success says nothing of the others failing beside
// it. perSecond <= 0 disables it.
func NewRateBackoff(perSecond float64, burst int, base, max time.Duration) *Backoff {
	if perSecond <= 0 {
		return NewBackoff(-1, base, max)
	}
	b := NewBackoff(0, base, max)
	b.rate, b.burst = perSecond, float64(burst)
	if b.burst < 1 {
		b.burst = 1
	}
	return b
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
		e = &failures{tokens: b.burst, at: now}
		b.m[src] = e
	}
	if b.rate > 0 {
		return b.failedRate(e, now)
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

// failedRate is Failed for a Backoff by rate. b.mu is held.
func (b *Backoff) failedRate(e *failures, now time.Time) time.Duration {
	e.last = now
	if now.Before(e.until) {
		// A failure that was under way when the back-off began: the
		// back-off is for it already.
		return e.until.Sub(now)
	}
	if now.After(e.at) {
		e.tokens = min(b.burst, e.tokens+b.rate*now.Sub(e.at).Seconds())
		e.at = now
	}
	if e.tokens >= 1 {
		e.tokens--
		return 0
	}
	if refill := time.Duration(b.burst / b.rate * float64(time.Second)); e.until.IsZero() || now.Sub(e.until) >= max(refill, b.base) {
		e.n = 0 // calm since the last back-off
	}
	e.n++
	d := b.base << min(e.n-1, 30)
	if d > b.max || d <= 0 {
		d = b.max
	}
	e.until = now.Add(d)
	e.tokens, e.at = 0, e.until
	return d
}

// Succeeded forgets src's failures (but those of a Backoff by rate).
func (b *Backoff) Succeeded(src string) {
	if b.free < 0 || b.rate > 0 {
		return
	}
	b.mu.Lock()
	delete(b.m, src)
	b.mu.Unlock()
}
