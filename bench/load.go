package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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
	return openWithin(ctx, dial, mode, ioTimeout)
}

// openWithin is open with its own bound on the whole opening.
func openWithin(ctx context.Context, dial DialFunc, mode byte, timeout time.Duration) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dial(dctx)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
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
	// OpenErr is the first open that failed: with ManyConfig.StopOnError,
	// what stopped the opening.
	OpenErr error
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
	return ManyWith(ctx, dial, ManyConfig{N: n, Size: size, OpenConc: openConc, Dur: dur, Ready: ready})
}

// ManyConfig is a Many load: N connections opened OpenConc at a time, then
// Size-byte ping-pong on each for Dur.
type ManyConfig struct {
	N, Size, OpenConc int
	Dur               time.Duration
	// Ready, when not nil, is called once the opening is over, with the
	// connections open, as the steady state begins.
	Ready func()
	// StopOnError ends the opening at the first failed open: past a limit
	// such as the descriptors of a process every later open fails too,
	// each only at its timeout. The ping-pong runs on those opened.
	StopOnError bool
	// OpenTimeout bounds each open; 15 s when 0.
	OpenTimeout time.Duration
}

// ManyWith runs the Many load cfg describes.
func ManyWith(ctx context.Context, dial DialFunc, cfg ManyConfig) ManyResult {
	n, size, dur := cfg.N, cfg.Size, cfg.Dur
	res := ManyResult{Hist: &Hist{}}
	timeout := cfg.OpenTimeout
	if timeout <= 0 {
		timeout = ioTimeout
	}
	conns := make([]net.Conn, n)
	var (
		next    atomic.Int64
		stopped atomic.Bool
		wg      sync.WaitGroup
		mu      sync.Mutex
	)
	t0 := time.Now()
	openDeadline := t0.Add(2 * time.Minute) // bounded even if every setup is slow
	for range cfg.OpenConc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(openDeadline) && ctx.Err() == nil && !stopped.Load() {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := openWithin(ctx, dial, ModeEcho, timeout)
				if err != nil {
					mu.Lock()
					res.Errors++
					res.LastErr = err
					if res.OpenErr == nil {
						res.OpenErr = err
					}
					mu.Unlock()
					if cfg.StopOnError {
						stopped.Store(true)
					}
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

	if cfg.Ready != nil {
		cfg.Ready()
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

// FirstByte dials, sends ModeEcho's byte and waits for its echo: the time
// from the dial to the first byte back. The connection is closed after.
func FirstByte(ctx context.Context, dial DialFunc) (time.Duration, error) {
	t0 := time.Now()
	c, err := open(ctx, dial, ModeEcho)
	if err != nil {
		return 0, err
	}
	d := time.Since(t0)
	return d, c.Close()
}

// stallBuffer is the socket buffer of the two ends of a stalled stream,
// the writer's and the target's: left to the kernel's tuning, each would
// hold megabytes that no process on the path holds.
const stallBuffer = 64 << 10

// StallResult is what Stall measured.
type StallResult struct {
	Opened int
	// Opened counts the streams held stalled at the end: opened and not
	// cut by the path. Written is what each of their writers got rid of
	// before its writes stopped.
	Written []int64
	// Fill is the time from the first open to the writes' stop.
	Fill time.Duration
	// Errors counts the opens that failed and the streams the path cut
	// while they were being filled; FirstErr is the first of them.
	Errors   int
	FirstErr error
	conns    []net.Conn
}

// Close closes the stalled connections.
func (r *StallResult) Close() {
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

// StallConfig is a Stall load: N connections opened OpenConc at a time,
// each written at Rate bytes a second at most (unpaced when 0) until the
// bytes written, all together, have not grown for Quiet, or Limit has
// passed since the start.
type StallConfig struct {
	N, OpenConc  int
	Rate         int64
	Quiet, Limit time.Duration
}

// Stall opens connections in ModeStall and writes to each without pause
// but its pace until every buffer between writer and target is full, or
// stop (when not nil) says so. It returns with the connections open, for
// the caller to measure what holding them costs; StallResult.Close
// closes them.
func Stall(ctx context.Context, dial DialFunc, cfg StallConfig, stop func() bool) *StallResult {
	n := cfg.N
	res := &StallResult{}
	written := make([]atomic.Int64, n)
	cut := make([]atomic.Bool, n)
	conns := make([]net.Conn, n)
	var (
		next    atomic.Int64
		total   atomic.Int64
		mu      sync.Mutex
		opening sync.WaitGroup
		writers sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Errors++
		if res.FirstErr == nil {
			res.FirstErr = err
		}
	}
	t0 := time.Now()
	end := t0.Add(cfg.Limit)
	const chunk = 32 << 10
	var every time.Duration // between chunks, at Rate
	if cfg.Rate > 0 {
		every = time.Duration(chunk * int64(time.Second) / cfg.Rate)
	}
	write := func(i int, c net.Conn) {
		defer writers.Done()
		if tc, ok := c.(*net.TCPConn); ok {
			// The writer's own socket holds little, as the target's does:
			// what fills is the path's.
			tc.SetWriteBuffer(stallBuffer)
		}
		b := make([]byte, chunk)
		fill(b)
		c.SetWriteDeadline(end)
		next := time.Now()
		for {
			if every > 0 {
				// Not waiting for an event: the pace of the writes.
				next = next.Add(every)
				time.Sleep(time.Until(next))
			}
			k, err := c.Write(b)
			written[i].Add(int64(k))
			total.Add(int64(k))
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return // the fill's end
			}
			if err != nil {
				cut[i].Store(true)
				fail(err)
				return
			}
		}
	}
	for range cfg.OpenConc {
		opening.Add(1)
		go func() {
			defer opening.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := openWithin(ctx, dial, ModeStall, ioTimeout)
				if err != nil {
					fail(err)
					continue
				}
				mu.Lock()
				conns[i] = c
				mu.Unlock()
				writers.Add(1)
				go write(int(i), c)
			}
		}()
	}
	opening.Wait()
	// Writes have stopped once the total holds still for quiet.
	last, since := total.Load(), time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	for time.Now().Before(end) && ctx.Err() == nil && time.Since(since) < cfg.Quiet {
		if stop != nil && stop() {
			break
		}
		<-tick.C
		if v := total.Load(); v != last {
			last, since = v, time.Now()
		}
	}
	tick.Stop()
	res.Fill = since.Sub(t0)
	for _, c := range conns {
		if c != nil {
			c.SetWriteDeadline(time.Now()) // ends the blocked writes
		}
	}
	writers.Wait()
	for i, c := range conns {
		if c == nil {
			continue
		}
		res.conns = append(res.conns, c)
		if !cut[i].Load() {
			res.Written = append(res.Written, written[i].Load())
		}
	}
	res.Opened = len(res.Written)
	return res
}
