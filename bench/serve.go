package bench

import (
	"errors"
	"net"
	"sync"
	"time"
)

// connServer runs a handler for each connection a listener accepts and,
// on close, cuts every connection it still tracks: the target and the
// delaying link share it.
type connServer struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// serve accepts on ln until it is closed, each connection tracked and
// handled on its own goroutine, closed when handle returns.
func (s *connServer) serve(ln net.Listener, handle func(net.Conn)) {
	s.ln = ln
	s.conns = make(map[net.Conn]struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// Out of descriptors and the like: back off rather than
				// spin; the load generator reports the failure.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if !s.track(c) {
				c.Close()
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				defer s.untrack(c)
				handle(c)
			}()
		}
	}()
}

// track registers c to be cut by close; false once close has begun.
func (s *connServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connServer) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// close stops accepting, cuts every tracked connection and waits for the
// handlers.
func (s *connServer) close() {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
