package bench

import (
	"crypto/tls"
	"io"
	"net"
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
	// ModeStall never reads again: the stalled reader whose stream fills
	// every buffer on the way. The connection stays open until Close.
	ModeStall = 'H'
)

// Target is the TCP service behind every tunnel: the same process and code
// for direct, limit and Tether, so only the path between differs.
type Target struct {
	Sunk atomic.Int64 // bytes read in ModeSink, all connections together

	srv  connServer
	quit chan struct{} // closed by Close: stalled connections end
}

// StartTarget listens on addr (a loopback host:port, port 0 for any).
func StartTarget(addr string) (*Target, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	t := &Target{quit: make(chan struct{})}
	t.srv.serve(ln, t.handle)
	return t, nil
}

// StartTargetTLS is StartTarget behind TLS with conf: the baseline of a
// path whose legs carry TLS, for comparing with Tether's.
func StartTargetTLS(addr string, conf *tls.Config) (*Target, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	t := &Target{quit: make(chan struct{})}
	t.srv.serve(tls.NewListener(ln, conf), t.handle)
	return t, nil
}

// Addr is the listening address.
func (t *Target) Addr() string { return t.srv.ln.Addr().String() }

// Close stops accepting, closes every connection and waits for them.
func (t *Target) Close() {
	close(t.quit)
	t.srv.close()
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
	case ModeStall:
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(stallBuffer)
		}
		<-t.quit
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
