package bench

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Delay is a TCP proxy that stands for a WAN link: each chunk it reads is
// written on hold later, in each direction, in the order read. It ends TCP
// on both sides, so windows and acknowledgements are loopback's: it
// delays round trips, not bulk rates. The kernel answers a new
// connection's SYN at once; what the handshake costs on a real link is
// put on the connecting side's first bytes instead, which reach the far
// side no sooner than one round trip after the accept and a hold, as they
// would behind TCP's handshake.
type Delay struct {
	srv      connServer
	to       string
	hold     time.Duration
	accepted atomic.Int64
}

// StartDelay listens on listen (a loopback host:port, port 0 for any) and
// relays every accepted connection to to, holding each chunk for hold in
// each direction.
func StartDelay(listen, to string, hold time.Duration) (*Delay, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	d := &Delay{to: to, hold: hold}
	d.srv.serve(ln, d.relay)
	return d, nil
}

// Addr is the listening address.
func (d *Delay) Addr() string { return d.srv.ln.Addr().String() }

// Accepted counts the connections accepted so far: which legs went
// through the link shows in it.
func (d *Delay) Accepted() int64 { return d.accepted.Load() }

// Close stops accepting, cuts every relayed connection and waits for them.
func (d *Delay) Close() { d.srv.close() }

// relay dials the far side for c and runs both directions until both have
// ended.
func (d *Delay) relay(c net.Conn) {
	d.accepted.Add(1)
	up, err := net.DialTimeout("tcp", d.to, 10*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	if !d.srv.track(up) {
		return
	}
	defer d.srv.untrack(up)
	var wg sync.WaitGroup
	wg.Add(2)
	handshake := time.Now().Add(2 * d.hold)
	go func() { defer wg.Done(); d.pipe(up, c, handshake) }()
	go func() { defer wg.Done(); d.pipe(c, up, time.Time{}) }()
	wg.Wait()
}

// chunk is what one read returned and when it may be written on.
type chunk struct {
	b   []byte
	due time.Time
}

// pipe carries src's bytes to dst, each read held until its due time: a
// hold after it was read, and after sent (the time the handshake would
// have let the first bytes leave) at the earliest. A reader's EOF becomes
// dst's half-close once every earlier chunk is out; any other end cuts
// both connections, as a link that fails would.
func (d *Delay) pipe(dst, src net.Conn, sent time.Time) {
	// Chunks in flight: far more than a round trip's worth of the small
	// messages this link is for; a full queue stops the reader, which is
	// TCP's back-pressure.
	q := make(chan chunk, 1024)
	var readErr error
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], later(time.Now(), sent).Add(d.hold)}
			}
			if err != nil {
				readErr = err // read after q's close
				return
			}
		}
	}()
	for ch := range q {
		// Not waiting for an event: holding the chunk is the link's delay.
		time.Sleep(time.Until(ch.due))
		if _, err := dst.Write(ch.b); err != nil {
			dst.Close()
			src.Close()
			for range q { // let the reader end
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok && errors.Is(readErr, io.EOF) {
		tc.CloseWrite()
		return
	}
	dst.Close()
	src.Close()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
