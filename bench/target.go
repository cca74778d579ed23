package bench

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Modes a load generator asks of the target with the first byte it sends.
// One listener serves every load, so the tunnel under test is started once
// with a single --allow target.
const (
	// ModeEcho echoes the mode byte (so "first echoed byte" is the moment a
	// connection is usable end to end), then every byte that follows.
	ModeEcho = 'E'
	// ModeSink reads and counts; the count is read in process, because a
	// stream has no half-close through which a report could come back.
	ModeSink = 'S'
	// ModeSource writes as fast as the connection takes it.
	ModeSource = 'G'
)

// Target is the TCP service behind every tunnel: the same process and code
// for direct, limit and Tether, so only the path between differs.
type Target struct {
	ln   net.Listener
	Sunk atomic.Int64 // bytes read in ModeSink, all connections together

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartTarget listens on addr (a loopback host:port, port 0 for any).
func StartTarget(addr string) (*Target, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	t := &Target{ln: ln, conns: make(map[net.Conn]struct{})}
	t.wg.Add(1)
	go t.serve()
	return t, nil
}

// Addr is the listening address.
func (t *Target) Addr() string { return t.ln.Addr().String() }

// Close stops accepting, closes every connection and waits for them.
func (t *Target) Close() {
	t.ln.Close()
	t.mu.Lock()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

func (t *Target) serve() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // EMFILE and the like: the load generator reports the failure
		}
		t.mu.Lock()
		t.conns[c] = struct{}{}
		t.mu.Unlock()
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.handle(c)
			t.mu.Lock()
			delete(t.conns, c)
			t.mu.Unlock()
			c.Close()
		}()
	}
}

func (t *Target) handle(c net.Conn) {
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case ModeEcho:
		if _, err := c.Write(mode[:]); err != nil {
			return
		}
		// A plain read/write loop, not io.Copy: on TCP to TCP io.Copy
		// splices through a pipe, which costs more than it saves on the
		// small messages the echo loads send.
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	case ModeSink:
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			t.Sunk.Add(int64(n))
			if err != nil {
				return
			}
		}
	case ModeSource:
		buf := make([]byte, 256<<10)
		fill(buf)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
}

// fill puts incompressible-looking bytes in b; nothing on the path
// compresses, but zeros would flatter any that did.
func fill(b []byte) {
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
}
