package hub

// The hub's TLS listener: handshakes under a time limit, off the
// accepting goroutine, and a source in login back-off refused before its
// handshake once past a small allowance.

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/tether-io/tether/internal/batchconn"
	"github.com/tether-io/tether/internal/limit"
)

// A source in back-off after failed logins may still start this many TLS
// handshakes a second (and this many at once) on the hub's TLS listeners;
// past them its connections are closed before the handshake. Its logins
// are refused anyway (429, CONNACK 3) before their token is looked at, but
// the handshake in front of that refusal is the dearest part of an
// attempt: a flood of failing logins must not cost the hub a handshake
// each. The allowance lets the few connections that would pass in back-off
// (a device's stream over /bridges/ from an address it shares with a
// failing device, a probe) through, unless their address floods. It is
// small: Tether's own clients reuse their connections, and an address
// enters back-off only when its logins keep failing (a success resets
// the count). At 5 a second, 8 flooding addresses still got 40 handshakes
// a second, most of what the flood cost the hub (docs/benchmarks.md §7).
const (
	backedOffHandshakeRate  = 1
	backedOffHandshakeBurst = 3
)

// refuseBeforeTLS reports whether a new connection from remote is closed
// before its TLS handshake: its source is in back-off and over its
// handshake allowance. It costs two map lookups.
func (l *limiter) refuseBeforeTLS(remote string) bool {
	src := limit.Source(remote)
	if l.addr.Wait(src, time.Now()) <= 0 || l.shakes.Allow(src) {
		return false
	}
	l.hit(limitAuthBackoffSrc, "connection closed before TLS: too many failed logins from its address", "remote", remote)
	return true
}

// TLSListener serves TLS over ln with the hub's handshake time limit
// (Limits.TLSHandshakeTimeout): each connection shakes hands on a
// goroutine of its own under a deadline, which is cleared once done, and
// only then does Accept return it, as a *tls.Conn. A client that opens
// connections and sends nothing, or a byte a minute, holds a goroutine for
// the limit at most and never delays another client. A connection from a
// source in login back-off beyond its handshake allowance
// (backedOffHandshakeRate) is closed at once, before any handshake.
func (s *Server) TLSListener(ln net.Listener, conf *tls.Config) net.Listener {
	l := &handshakeListener{
		Listener: ln,
		conf:     conf,
		timeout:  s.lim.l.TLSHandshakeTimeout,
		refuse:   s.lim.refuseBeforeTLS,
		conns:    make(chan net.Conn),
		errs:     make(chan error),
		done:     make(chan struct{}),
		failed:   make(chan struct{}),
		shaking:  make(map[net.Conn]struct{}),
		onTimeout: func(remote string) {
			s.lim.hit(limitTLSHandshake, "TLS handshake timed out", "remote", remote)
		},
	}
	go l.accept()
	return l
}

type handshakeListener struct {
	net.Listener
	conf      *tls.Config
	timeout   time.Duration
	onTimeout func(remote string)
	refuse    func(remote string) bool // nil: refuse none

	conns  chan net.Conn
	errs   chan error    // temporary Accept errors, passed on one by one
	done   chan struct{} // closed by Close
	failed chan struct{} // closed when the inner listener failed for good
	ferr   error         // why; written before failed is closed
	once   sync.Once

	mu      sync.Mutex
	closed  bool
	shaking map[net.Conn]struct{} // raw conns in their handshake, closed by Close
}

func (l *handshakeListener) accept() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var t interface{ Temporary() bool }
			var ne net.Error
			if errors.As(err, &t) && t.Temporary() || errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: the server backs
				// off and calls Accept again.
				select {
				case l.errs <- err:
					continue
				case <-l.done:
					return
				}
			}
			l.ferr = err
			close(l.failed)
			return
		}
		if l.refuse != nil && c.RemoteAddr() != nil && l.refuse(c.RemoteAddr().String()) {
			// A reset, not a FIN: nothing was said on this connection,
			// and a flood of them then leaves no TIME_WAIT sockets behind
			// and half the packets to handle.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return
		}
		l.shaking[c] = struct{}{}
		l.mu.Unlock()
		go l.handshake(c)
	}
}

func (l *handshakeListener) handshake(c net.Conn) {
	// Beneath the TLS layer a batchconn lets the relay send a frame's
	// records in one write (see internal/batchconn).
	tc := tls.Server(batchconn.New(c), l.conf)
	if l.timeout > 0 {
		_ = c.SetDeadline(time.Now().Add(l.timeout))
	}
	err := tc.Handshake()
	l.mu.Lock()
	delete(l.shaking, c)
	closed := l.closed
	l.mu.Unlock()
	if err != nil || closed {
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() && !closed {
			l.onTimeout(c.RemoteAddr().String())
		}
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	select {
	case l.conns <- tc:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next connection whose handshake is done.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.failed:
		return nil, l.ferr
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and ends the handshakes in progress.
func (l *handshakeListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.mu.Lock()
		l.closed = true
		for c := range l.shaking {
			c.Close()
		}
		l.mu.Unlock()
	})
	return l.Listener.Close()
}
