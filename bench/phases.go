package bench

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Phase is one window of a PingPong run.
type Phase struct {
	Name string
	Dur  time.Duration
}

// PhaseResult is what the streams did during one phase.
type PhaseResult struct {
	Name string
	Msgs uint64
	Dur  time.Duration
	Hist *Hist
}

// Rate is round trips a second.
func (p PhaseResult) Rate() float64 {
	if p.Dur <= 0 {
		return 0
	}
	return float64(p.Msgs) / p.Dur.Seconds()
}

// PingPong opens n streams (openConc at a time), then ping-pongs size
// bytes on each, without a pause, through consecutive phases on the same
// streams. at(i) is called as phase i begins (from its own goroutine; it
// must not block for long). A round trip counts in the phase in which it
// ends. Every read and write has a deadline; the run ends with its last
// phase.
func PingPong(ctx context.Context, dial DialFunc, n, size, openConc int, phases []Phase, at func(i int)) (res []PhaseResult, opened int, openTime time.Duration, errs int, lastErr error) {
	conns := make([]net.Conn, n)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
	)
	t0 := time.Now()
	openDeadline := t0.Add(2 * time.Minute)
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
					errs++
					lastErr = err
					mu.Unlock()
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	openTime = time.Since(t0)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()

	start := time.Now()
	bounds := make([]time.Time, len(phases)+1)
	bounds[0] = start
	for i, p := range phases {
		bounds[i+1] = bounds[i].Add(p.Dur)
	}
	end := bounds[len(phases)]
	counts := make([]atomic.Uint64, len(phases))
	hists := make([]*Hist, len(phases))
	for i := range hists {
		hists[i] = &Hist{}
	}
	phaseOf := func(t time.Time) int {
		for i := range phases {
			if t.Before(bounds[i+1]) {
				return i
			}
		}
		return -1
	}
	// The phase clock.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range phases {
			sleep(ctx, time.Until(bounds[i]))
			if ctx.Err() != nil {
				return
			}
			if at != nil {
				at(i)
			}
		}
	}()
	for _, c := range conns {
		if c == nil {
			continue
		}
		opened++
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]Hist, len(phases))
			msg, back := make([]byte, size), make([]byte, size)
			fill(msg)
			var err error
			for ctx.Err() == nil {
				t := time.Now()
				if !t.Before(end) {
					break
				}
				c.SetDeadline(t.Add(ioTimeout))
				if _, err = c.Write(msg); err != nil {
					break
				}
				if _, err = io.ReadFull(c, back); err != nil {
					break
				}
				now := time.Now()
				if i := phaseOf(now); i >= 0 {
					local[i].Add(now.Sub(t))
					counts[i].Add(1)
				}
			}
			mu.Lock()
			for i := range local {
				hists[i].Merge(&local[i])
			}
			if err != nil {
				errs++
				lastErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for i, p := range phases {
		res = append(res, PhaseResult{Name: p.Name, Msgs: counts[i].Load(), Dur: p.Dur, Hist: hists[i]})
	}
	return res, opened, openTime, errs, lastErr
}
