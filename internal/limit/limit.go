// Package limit holds the per-source bookkeeping behind the hub's limits:
// how many connections one address holds, how fast it opens new ones, and
// how long it must wait after failing to authenticate. The hub and its MQTT
// broker share it; each keeps its own tables.
//
// Every table is bounded: entries that carry no state worth keeping (no
// open connection, a full token bucket, no recent failure) are swept when
// the table grows, and a table that is still full after a sweep stops
// tracking new sources rather than refusing them, so that an address spray
// cannot lock out everyone else.
package limit

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxEntries bounds each table. 128 Ki sources at well under 200 bytes
// each stays around 20 MiB at worst.
const maxEntries = 1 << 17

// sweepFloor is the table size below which nothing is swept.
const sweepFloor = 1 << 12

// Source is the key of a remote address ("ip:port", or a bare IP): the IP
// for IPv4, the /64 prefix for IPv6, since one IPv6 host commonly holds a
// whole /64 and could otherwise mint a fresh source per connection. A
// remote that does not parse is its own key.
func Source(remote string) string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return remote
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// Sources counts the connections each source holds and the rate at which
// it makes attempts. The zero value is not usable; use NewSources.
type Sources struct {
	maxConns int        // <= 0: no cap
	rate     rate.Limit // <= 0: no rate limit
	burst    int
	// idle is how long an entry without connections must have been quiet
	// for its bucket to be full again; such an entry carries nothing.
	idle time.Duration

	mu      sync.Mutex
	m       map[string]*source
	sweepAt int
}

type source struct {
	conns int
	lim   *rate.Limiter
	seen  time.Time
}

// NewSources caps each source at maxConns concurrent connections and
// perSecond attempts a second, with a burst of burst attempts (at least 1).
// A cap or rate of zero or less is no limit.
func NewSources(maxConns int, perSecond float64, burst int) *Sources {
	s := &Sources{maxConns: maxConns, burst: max(burst, 1), m: make(map[string]*source), sweepAt: sweepFloor}
	if perSecond > 0 {
		s.rate = rate.Limit(perSecond)
		s.idle = time.Duration(float64(s.burst)/perSecond*float64(time.Second)) + time.Second
	} else {
		s.idle = time.Second
	}
	return s
}

// entry returns src's entry, creating it; nil when the table is full.
// s.mu is held.
func (s *Sources) entry(src string, now time.Time) *source {
	e := s.m[src]
	if e != nil {
		return e
	}
	if len(s.m) >= s.sweepAt {
		for k, e := range s.m {
			if e.conns == 0 && now.Sub(e.seen) >= s.idle {
				delete(s.m, k)
			}
		}
		s.sweepAt = max(sweepFloor, 2*len(s.m))
	}
	if len(s.m) >= maxEntries {
		return nil
	}
	e = &source{seen: now}
	if s.rate > 0 {
		e.lim = rate.NewLimiter(s.rate, s.burst)
	}
	s.m[src] = e
	return e
}

// Open counts one more connection from src, and reports whether src now
// holds more than the cap. The returned release uncounts it; call it
// exactly once when the connection ends, over the cap or not.
func (s *Sources) Open(src string) (release func(), over bool) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(src, now)
	if e == nil {
		return func() {}, false
	}
	e.conns++
	e.seen = now
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			e.conns--
			e.seen = time.Now()
			s.mu.Unlock()
		})
	}, s.maxConns > 0 && e.conns > s.maxConns
}

// Conns returns how many connections from src are open now.
func (s *Sources) Conns(src string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[src]; e != nil {
		return e.conns
	}
	return 0
}

// Allow takes one attempt from src's bucket and reports whether src is
// within its rate.
func (s *Sources) Allow(src string) bool {
	if s.rate <= 0 {
		return true
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(src, now)
	if e == nil {
		return true
	}
	e.seen = now
	return e.lim.AllowN(now, 1)
}

// Len is the number of sources tracked now.
func (s *Sources) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
