package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ioTimeout bounds every single read or write of a load: a stuck tunnel
// fails the figure instead of hanging the run.
const ioTimeout = 15 * time.Second

// DialFunc opens one connection to the target through the path under test.
type DialFunc func(ctx context.Context) (net.Conn, error)

// TCPDialer dials addr: the target itself (direct), the first relay of the
// limit chain, or the listener of `tether forward`.
func TCPDialer(addr string) DialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// open dials and sends the mode byte; in ModeEcho it also waits for the
// byte to come back, so the connection is known to reach the target.
func open(ctx context.Context, dial DialFunc, mode byte) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, ioTimeout)
	defer cancel()
	c, err := dial(dctx)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write([]byte{mode}); err != nil {
		c.Close()
		return nil, err
	}
	if mode == ModeEcho {
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			c.Close()
			return nil, err
		}
		if b[0] != mode {
			c.Close()
			return nil, fmt.Errorf("echo answered %q", b[0])
		}
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// Bulk measures the throughput of one connection in Gbit/s: forward
// (client → target, counted where the bytes arrive) or reverse. The first
// warm of the run is not counted (TCP windows, TLS records and the Go
// scheduler settle), then dur is. mark, when not nil, is called at the
// start and at the end of the counted window (to read CPU counters there).
func Bulk(ctx context.Context, dial DialFunc, t *Target, reverse bool, warm, dur time.Duration, mark func(end bool)) (float64, error) {
	mode := byte(ModeSink)
	if reverse {
		mode = ModeSource
	}
	c, err := open(ctx, dial, mode)
	if err != nil {
		return 0, err
	}
	end := time.Now().Add(warm + dur)
	c.SetDeadline(end.Add(ioTimeout))
	var (
		got  atomic.Int64
		wg   sync.WaitGroup
		ioEr atomic.Value
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 256<<10)
		fill(buf)
		for time.Now().Before(end) {
			var n int
			var err error
			if reverse {
				n, err = c.Read(buf)
				got.Add(int64(n))
			} else {
				_, err = c.Write(buf)
			}
			if err != nil {
				ioEr.Store(err)
				return
			}
		}
	}()
	counter := func() int64 {
		if reverse {
			return got.Load()
		}
		return t.Sunk.Load()
	}
	sleep(ctx, warm)
	b0, t0 := counter(), time.Now()
	if mark != nil {
		mark(false)
	}
	sleep(ctx, dur)
	b1, t1 := counter(), time.Now()
	if mark != nil {
		mark(true)
	}
	c.Close()
	wg.Wait()
	if b1 == b0 {
		if err, ok := ioEr.Load().(error); ok {
			return 0, err
		}
		return 0, errors.New("no bytes moved")
	}
	return float64(b1-b0) * 8 / t1.Sub(t0).Seconds() / 1e9, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// RTT sends size-byte messages on one connection, one at a time, and
// records each round trip, for dur or maxN messages, whichever comes first.
func RTT(ctx context.Context, dial DialFunc, size int, dur time.Duration, maxN int) (*Hist, error) {
	c, err := open(ctx, dial, ModeEcho)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msg, back := make([]byte, size), make([]byte, size)
	fill(msg)
	h := &Hist{}
	const warmup = 200 // first round trips pay for cold caches and goroutine wake-ups
	end := time.Now().Add(dur)
	for i := 0; i < maxN+warmup && time.Now().Before(end) && ctx.Err() == nil; i++ {
		c.SetDeadline(time.Now().Add(ioTimeout))
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			return h, err
		}
		if _, err := io.ReadFull(c, back); err != nil {
			return h, err
		}
		if i >= warmup {
			h.Add(time.Since(t0))
		}
	}
	return h, nil
}

// SetupResult is what Setup measured.
type SetupResult struct {
	Hist    *Hist // dial to first echoed byte, successful setups only
	OK      int
	Errors  int
	Elapsed time.Duration
	LastErr error
}

// Rate is set-ups per second.
func (r SetupResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// Setup opens connections with conc workers, each timing dial to first
// echoed byte and then closing, for dur or maxN set-ups in all.
func Setup(ctx context.Context, dial DialFunc, conc int, dur time.Duration, maxN int) SetupResult {
	var (
		mu    sync.Mutex
		res   = SetupResult{Hist: &Hist{}}
		taken atomic.Int64
		wg    sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(dur)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &Hist{}
			ok, bad := 0, 0
			var last error
			for time.Now().Before(end) && ctx.Err() == nil && taken.Add(1) <= int64(maxN) {
				t0 := time.Now()
				c, err := open(ctx, dial, ModeEcho)
				if err != nil {
					bad++
					last = err
					continue
				}
				h.Add(time.Since(t0))
				ok++
				c.Close()
			}
			mu.Lock()
			res.Hist.Merge(h)
			res.OK += ok
			res.Errors += bad
			if last != nil {
				res.LastErr = last
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}

// ManyResult is what Many measured.
type ManyResult struct {
	Opened   int
	OpenTime time.Duration // to open all of them, openConc at a time
	Msgs     uint64        // round trips completed in the steady-state window
	Dur      time.Duration // the steady-state window
	Hist     *Hist
	Errors   int
	LastErr  error
}

// Rate is messages per second in the steady state; a message is one
// round trip of size bytes each way.
func (r ManyResult) Rate() float64 {
	if r.Dur <= 0 {
		return 0
	}
	return float64(r.Msgs) / r.Dur.Seconds()
}

// Many opens n connections first (openConc at a time), then has each
// ping-pong size-byte messages for dur, all at once. ready, when not nil,
// is called once all are open, as the steady state begins.
func Many(ctx context.Context, dial DialFunc, n, size, openConc int, dur time.Duration, ready func()) ManyResult {
	res := ManyResult{Hist: &Hist{}}
	conns := make([]net.Conn, n)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
	)
	t0 := time.Now()
	openDeadline := t0.Add(2 * time.Minute) // bounded even if every setup is slow
	for range openConc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(openDeadline) && ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := open(ctx, dial, ModeEcho)
				if err != nil {
					mu.Lock()
					res.Errors++
					res.LastErr = err
					mu.Unlock()
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	res.OpenTime = time.Since(t0)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()

	if ready != nil {
		ready()
	}
	var msgs atomic.Uint64
	start := time.Now()
	end := start.Add(dur)
	for _, c := range conns {
		if c == nil {
			continue
		}
		res.Opened++
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &Hist{}
			var done uint64
			msg, back := make([]byte, size), make([]byte, size)
			fill(msg)
			c.SetDeadline(end.Add(ioTimeout))
			var err error
			for ctx.Err() == nil {
				t := time.Now()
				if !t.Before(end) {
					break
				}
				if _, err = c.Write(msg); err != nil {
					break
				}
				if _, err = io.ReadFull(c, back); err != nil {
					break
				}
				if now := time.Now(); now.Before(end) {
					h.Add(now.Sub(t))
					done++
				}
			}
			msgs.Add(done)
			mu.Lock()
			res.Hist.Merge(h)
			if err != nil {
				res.Errors++
				res.LastErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Dur = end.Sub(start)
	res.Msgs = msgs.Load()
	return res
}
