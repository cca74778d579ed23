package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// path is one way from the service to the device's target: direct TCP, or
// a candidate's stream through the hub.
type path struct {
	name   string
	open   func() (io.ReadWriteCloser, error)
	hub    *child // nil for direct
	device *child
}

func (p *path) control(c *child, cmd string) (string, error) {
	conn, err := net.Dial("tcp", c.addrs[len(c.addrs)-1])
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if _, err := fmt.Fprintln(conn, cmd); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

// hubMem is the hub's heap and stack in use after a GC, and its open
// spliced streams.
func (p *path) hubMem() (heap, stack, streams int64, err error) {
	line, err := p.control(p.hub, "mem")
	if err != nil {
		return 0, 0, 0, err
	}
	f := strings.Fields(line)
	if len(f) < 3 {
		return 0, 0, 0, fmt.Errorf("hub answered %q", line)
	}
	heap, _ = strconv.ParseInt(f[0], 10, 64)
	stack, _ = strconv.ParseInt(f[1], 10, 64)
	streams, _ = strconv.ParseInt(f[2], 10, 64)
	return heap, stack, streams, nil
}

// hubCPU is the hub process's CPU time so far, from /proc.
func (p *path) hubCPU() time.Duration {
	if p.hub == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.hub.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

func startPaths(names []string, window int, certFile, keyFile string) ([]*path, error) {
	tlsCfg, err := clientTLS(certFile)
	if err != nil {
		return nil, err
	}
	win := strconv.Itoa(window)
	d, err := startChild("-role", "device", "-mux", "none", "-cert", certFile)
	if err != nil {
		return nil, err
	}
	direct := d.addrs[0]
	paths := []*path{{name: "direct", device: d, open: func() (io.ReadWriteCloser, error) {
		return net.Dial("tcp", direct)
	}}}
	for _, name := range names {
		cand, ok := candidates[name]
		if !ok {
			return paths, fmt.Errorf("unknown candidate %q", name)
		}
		h, err := startChild("-role", "hub", "-mux", name, "-window", win, "-cert", certFile, "-key", keyFile)
		if err != nil {
			return paths, err
		}
		p := &path{name: name, hub: h}
		paths = append(paths, p)
		if p.device, err = startChild("-role", "device", "-mux", name, "-window", win, "-hub", h.addrs[1], "-cert", certFile); err != nil {
			return paths, err
		}
		c, err := dialTLS(h.addrs[0], tlsCfg)
		if err != nil {
			return paths, err
		}
		s, err := cand.new(c, true, true, window)
		if err != nil {
			return paths, err
		}
		p.open = s.Open
	}
	return paths, nil
}

// openCmd opens a stream and tells the device what to be.
func openCmd(p *path, cmd byte) (io.ReadWriteCloser, error) {
	c, err := p.open()
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{cmd}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// setupOnce is a stream's whole life as a client sees a new connection:
// open, the first byte echoed, close.
func setupOnce(p *path) error {
	c, err := p.open()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte{cmdEcho, 'x'}); err != nil {
		return err
	}
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	return err
}

// setup runs setups for d with par at once: the p50 in ms and the rate.
func setup(p *path, d time.Duration, par int) (p50ms, perSec float64, err error) {
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	end := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for time.Now().Before(end) {
				t := time.Now()
				err := setupOnce(p)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				lat = append(lat, time.Since(t))
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return 0, 0, firstErr
	}
	slices.Sort(lat)
	return float64(lat[len(lat)/2].Microseconds()) / 1000, float64(len(lat)) / el.Seconds(), nil
}

// openMany opens n streams of cmd, 32 at a time, as the project's harness
// opens its 1,000.
func openMany(p *path, n int, cmd byte) ([]io.ReadWriteCloser, error) {
	conns := make([]io.ReadWriteCloser, n)
	var next atomic.Int64
	var errOnce sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := openCmd(p, cmd)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		closeAll(conns)
	}
	return conns, firstErr
}

func closeAll(cs []io.ReadWriteCloser) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

// pingPong runs 1 KiB round trips on every stream without pause and counts
// those of the window after a warm-up; stop ends them.
type pingPong struct {
	count atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
	errs  atomic.Int64
}

func startPingPong(conns []io.ReadWriteCloser) *pingPong {
	pp := &pingPong{stop: make(chan struct{})}
	for _, c := range conns {
		pp.wg.Go(func() {
			buf := make([]byte, 1024)
			for {
				select {
				case <-pp.stop:
					return
				default:
				}
				if _, err := c.Write(buf); err != nil {
					pp.errs.Add(1)
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					pp.errs.Add(1)
					return
				}
				pp.count.Add(1)
			}
		})
	}
	return pp
}

// rate counts the round trips of d after warm.
func (pp *pingPong) rate(warm, d time.Duration) float64 {
	time.Sleep(warm) // a load's warm-up is a time, not an event
	n0, t0 := pp.count.Load(), time.Now()
	time.Sleep(d)
	return float64(pp.count.Load()-n0) / time.Since(t0).Seconds()
}

func (pp *pingPong) end(conns []io.ReadWriteCloser) {
	close(pp.stop)
	closeAll(conns)
	pp.wg.Wait()
}

// manyStreams is 1,000 streams × 1 KiB ping-pong: msgs/s and the hub's CPU
// per round trip in µs.
func manyStreams(p *path, n int) (perSec, cpuUs float64, err error) {
	conns, err := openMany(p, n, cmdEcho)
	if err != nil {
		return 0, 0, err
	}
	pp := startPingPong(conns)
	time.Sleep(500 * time.Millisecond)
	c0, n0 := p.hubCPU(), pp.count.Load()
	perSec = pp.rate(0, 3*time.Second)
	c1, n1 := p.hubCPU(), pp.count.Load()
	pp.end(conns)
	if pp.errs.Load() > 0 && perSec == 0 {
		return 0, 0, errors.New("every stream failed")
	}
	if n1 > n0 {
		cpuUs = float64((c1 - c0).Microseconds()) / float64(n1-n0)
	}
	return perSec, cpuUs, nil
}

// bulk is one stream's rate, device → service, in Gbit/s, and the hub's
// CPU seconds per GB.
func bulk(p *path) (gbps, cpuPerGB float64, err error) {
	c, err := openCmd(p, cmdSource)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	var n atomic.Int64
	done := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		buf := make([]byte, 256<<10)
		for {
			k, err := c.Read(buf)
			n.Add(int64(k))
			if err != nil {
				done <- err
				return
			}
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	b0, c0, t0 := n.Load(), p.hubCPU(), time.Now()
	time.Sleep(3 * time.Second)
	b1, c1, el := n.Load(), p.hubCPU(), time.Since(t0)
	close(stop)
	c.Close()
	<-done
	gb := float64(b1-b0) / 1e9
	if gb > 0 && p.hub != nil {
		cpuPerGB = (c1 - c0).Seconds() / gb
	}
	return gb * 8 / el.Seconds(), cpuPerGB, nil
}

// stalled opens n streams whose device end never reads and writes into
// each until nothing moves; close releases them.
type stalled struct {
	conns   []io.ReadWriteCloser
	written atomic.Int64
	wg      sync.WaitGroup
}

func startStalled(p *path, n int) (*stalled, error) {
	conns, err := openMany(p, n, cmdStall)
	if err != nil {
		return nil, err
	}
	s := &stalled{conns: conns}
	for _, c := range conns {
		s.wg.Go(func() {
			buf := make([]byte, 32<<10)
			for {
				k, err := c.Write(buf)
				s.written.Add(int64(k))
				if err != nil {
					return
				}
			}
		})
	}
	// Nothing tells a writer that every window on the way is full: the
	// bytes accepted are polled until they stop growing.
	last := int64(-1)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(300 * time.Millisecond)
		w := s.written.Load()
		if w == last {
			break
		}
		last = w
	}
	return s, nil
}

func (s *stalled) release(p *path) {
	p.control(p.device, "release")
	closeAll(s.conns)
	s.wg.Wait()
}

// stallOthers is the rate of 99 ping-ponging streams with one stalled
// stream beside them ÷ their rate without it.
func stallOthers(p *path) (float64, error) {
	conns, err := openMany(p, 99, cmdEcho)
	if err != nil {
		return 0, err
	}
	pp := startPingPong(conns)
	before := pp.rate(300*time.Millisecond, 1500*time.Millisecond)
	s, err := startStalled(p, 1)
	if err != nil {
		pp.end(conns)
		return 0, err
	}
	during := pp.rate(0, 1500*time.Millisecond)
	s.release(p)
	pp.end(conns)
	if before == 0 {
		return 0, errors.New("no round trip before the stall")
	}
	return during / before, nil
}

// stallMemory opens n stalled streams and reports the hub's heap and stack
// per stream, the bytes each writer got rid of before it blocked, and
// whether a new stream still gets its echo meanwhile.
type stallMem struct {
	heapKiB, stackKiB, writtenKiB float64
	probe                         bool
}

func stallMemory(p *path, n int) (stallMem, error) {
	var r stallMem
	runtime.GC()
	h0, st0, _, err := p.hubMem()
	if err != nil {
		return r, err
	}
	s, err := startStalled(p, n)
	if err != nil {
		return r, err
	}
	h1, st1, streams, err := p.hubMem()
	if err == nil && streams < int64(n) {
		err = fmt.Errorf("hub holds %d streams of %d", streams, n)
	}
	probe := make(chan error, 1)
	go func() { probe <- setupOnce(p) }()
	select {
	case perr := <-probe:
		r.probe = perr == nil
	case <-time.After(3 * time.Second):
	}
	r.heapKiB = float64(h1-h0) / float64(n) / 1024
	r.stackKiB = float64(st1-st0) / float64(n) / 1024
	r.writtenKiB = float64(s.written.Load()) / float64(n) / 1024
	s.release(p)
	return r, err
}
