// Package batchconn lets a TLS connection send several records in one
// write system call. tls.Conn.Write of a 256 KiB frame writes each 16 KiB
// record on its own; on a relay, where syscalls are most of the CPU, one
// write per frame measured +20–34% throughput and −20% CPU
// (docs/benchmarks.md). A Conn sits beneath the tls.Conn and passes
// writes straight through, except inside Batch, where it gathers them and
// sends them together when the batch ends.
package batchconn

import (
	"crypto/tls"
	"net"
	"sync"
)

// Conn is a net.Conn whose writes can be batched.
type Conn struct {
	net.Conn

	// mu orders writes: a record written outside a batch (a TLS alert or
	// key update from the read side) must not overtake records gathered
	// in one, so pass-through writes and the final flush both hold it.
	mu       sync.Mutex
	batching bool
	buf      *[]byte
	err      error // sticky: after a failed flush the TLS stream is broken
}

// New wraps c.
func New(c net.Conn) *Conn { return &Conn{Conn: c} }

// Listener wraps every accepted conn in a Conn.
type Listener struct{ net.Listener }

// Accept returns the next connection, wrapped.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return New(c), nil
}

// bufPool holds batch buffers only while a batch is open, so an idle
// connection holds none.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 288<<10) // a 256 KiB frame and its records' overhead
	return &b
}}

// Write sends p, or gathers it inside a batch.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.batching {
		*c.buf = append(*c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Batch runs f, gathering the writes it makes, then sends them in one
// write. Batches on one Conn must not overlap: the caller serialises them
// (the relay holds its per-peer write lock).
func (c *Conn) Batch(f func() error) error {
	c.mu.Lock()
	c.batching = true
	c.buf = bufPool.Get().(*[]byte)
	c.mu.Unlock()
	ferr := f()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	var werr error
	if len(*c.buf) > 0 && c.err == nil {
		if _, werr = c.Conn.Write(*c.buf); werr != nil {
			c.err = werr
		}
	}
	*c.buf = (*c.buf)[:0]
	bufPool.Put(c.buf)
	c.buf = nil
	if ferr != nil {
		return ferr
	}
	return werr
}

// Find returns the Conn beneath c, a *tls.Conn or a Conn itself, or nil.
func Find(c net.Conn) *Conn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	bc, _ := c.(*Conn)
	return bc
}
