// Package wsconn is the client side of a stream on the streaming endpoint:
// it dials a wss:// bridge URL with a bearer token and presents the
// WebSocket as a net.Conn. The device and service SDKs share it.
//
// A stream is a byte stream, not a sequence of messages: Read returns the
// payload of every data frame in order, whatever its opcode and however it
// was fragmented, and every Write goes out as binary frames.
//
// A WebSocket has no half-close. Dial offers the subprotocol
// tether-stream.v1 (Subprotocol), in which an empty binary frame with FIN
// means "this side will send no more data". When the hub selects it,
// CloseWrite sends that marker and Read returns io.EOF on receiving it while
// the other direction stays open; Done tells that apart from the end of the
// whole stream. Without it (an Azure hub, an older Tether hub) io.EOF means
// the whole stream is over and CloseWrite closes the stream.
//
// A stream that ends any other way than cleanly (the peer's close frame
// with code 1000 or without a code, or the marker) is cut: Read returns a
// *CloseError, never io.EOF, so that a truncated transfer cannot pass for
// a complete one. Abort ends a stream that way on purpose.
package wsconn

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/batchconn"
	"github.com/tether-io/tether/internal/wsframe"
	"github.com/tether-io/tether/wire"
)

// Subprotocol is the WebSocket subprotocol Dial offers. A hub selecting it
// promises to relay the end-of-stream marker (an empty binary frame with
// FIN) from a peer that speaks it too, and never to relay an empty binary
// frame with another meaning.
const Subprotocol = wire.SubprotocolStream

// SubprotocolReuse is Subprotocol plus connection reuse, which a Pool
// offers: once a stream ended with a close frame each way, the connection
// is HTTP/1.1 again and carries the pool's next upgrade request, so many
// streams pay for one TLS handshake.
const SubprotocolReuse = wire.SubprotocolStreamReuse

// Conn is one side of a stream. Read and Write may be called concurrently
// with each other; concurrent Reads (or Writes) are serialised.
type Conn struct {
	nc    net.Conn
	raw   net.Conn        // the TCP conn under nc; closed directly by Close
	batch *batchconn.Conn // nil without TLS
	// halfClose is set when the hub selected Subprotocol: the marker means
	// EOF in both directions. Fixed after Dial.
	halfClose bool
	// protocol is the subprotocol the hub selected at Dial.
	protocol string
	// reuse is set when the hub selected SubprotocolReuse; pool and key say
	// where Close returns the connection after a clean close handshake.
	reuse bool
	pool  *Pool
	key   string
	// gotClose is set when the peer's close frame was read; readEnd is
	// closed when reading ended for any reason. A Close waiting to reuse
	// the connection while another goroutine reads waits on them.
	gotClose    atomic.Bool
	readEnd     chan struct{}
	readEndOnce sync.Once
	// dmu guards released: once the connection went back to the pool, the
	// deadline setters must not touch it, as another stream owns it.
	dmu      sync.Mutex
	released bool

	// peerEOF is set once the peer's end-of-stream marker was read. From
	// then on Read returns io.EOF without touching the read state, which
	// belongs to the watch goroutine (see watch).
	peerEOF atomic.Bool

	rmu  sync.Mutex
	r    *bufio.Reader
	rerr error // sticky: io.EOF after a close frame, or a broken stream
	// The read state survives across Read calls so that a read deadline
	// firing in the middle of a header or a control frame loses nothing.
	hr        wsframe.HeaderReader // the next header, as far as it came
	inPayload bool                 // h was read; its payload is next
	h         ws.Header            // the current frame's header
	left      int64                // payload bytes left in the current frame
	off       int                  // bytes of the current payload already unmasked
	ctrl      [ws.MaxControlFramePayloadSize]byte

	wmu sync.Mutex
	// writeTimeout, when set (a session's conn), bounds every write with
	// a deadline of its own: see WritesBounded.
	writeTimeout time.Duration
	// zeroMask is set for a stream of a session (OnSession): its frames
	// travel inside the session's own masked frames, and the mask RFC
	// 6455 asks of a client only defeats proxies reading the connection
	// (§10.3), which cannot read these. Their key is zero, which a peer
	// unmasks as any other, and no byte is masked twice.
	zeroMask  bool
	wbuf      []byte // one outgoing frame, reused
	cbuf      [2 + maxHeader + ws.MaxControlFramePayloadSize]byte
	closeSent bool // no data frame may follow a close frame
	wbroken   bool // a frame went out in part: the stream is garbage now
	eofSent   bool // CloseWrite sent the marker: no data frame may follow

	closeOnce sync.Once
	closeErr  error
	// closing is set once Close or Abort began: errors from the
	// connection they close are this end's doing, not a cut.
	closing atomic.Bool
	// end says how the stream ended, set once, always before done is
	// closed: cleanEnd, or the *CloseError that cut it.
	end atomic.Pointer[ending]

	done     chan struct{} // closed when the stream is over both ways
	doneOnce sync.Once
}

var _ net.Conn = (*Conn)(nil)

func newConn(nc net.Conn, br *bufio.Reader, raw net.Conn, batch *batchconn.Conn) *Conn {
	if raw == nil {
		raw = nc
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	return &Conn{nc: nc, raw: raw, batch: batch, r: br, done: make(chan struct{}), readEnd: make(chan struct{})}
}

// Done returns a channel closed once the stream is over in both
// directions: a close frame was received or sent, Close was called, or the
// connection failed. Frames are only seen while something reads: Read, or,
// after the peer's end-of-stream marker (Read returned io.EOF, Done still
// open: writes still reach the peer), the conn itself, which goes on
// reading so that Done closes when the stream ends for good even if nobody
// calls Read again. A read deadline that passes after the marker stops that
// watch; Done then closes only on a write error or Close.
func (c *Conn) Done() <-chan struct{} { return c.done }

// markDone closes done once. Conns built without newConn (tests) have none.
func (c *Conn) markDone() {
	if c.done == nil {
		return
	}
	c.doneOnce.Do(func() { close(c.done) })
}

// ending is how a stream ended; err is nil for a clean end.
type ending struct{ err error }

var cleanEnd = &ending{}

// setEnd records how the stream ended, unless that is known already.
// err is nil for a clean end. It must come before markDone, so that Err
// is final once Done is closed.
func (c *Conn) setEnd(err error) {
	e := cleanEnd
	if err != nil {
		e = &ending{err}
	}
	c.end.CompareAndSwap(nil, e)
}

// Err reports how the stream ended: nil while it is open or after it
// ended cleanly (the peer's close frame 1000 or without a code, or this
// end's Close), the *CloseError that cut it otherwise. It is final once
// Done is closed. Read returns io.EOF after the peer's end-of-stream
// marker whatever comes next: Err tells whether the stream then ended
// cleanly.
func (c *Conn) Err() error {
	if e := c.end.Load(); e != nil {
		return e.err
	}
	return nil
}

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the hub's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the connection.
func (c *Conn) SetDeadline(t time.Time) error {
	return c.deadline(func() error { return c.nc.SetDeadline(t) })
}

// SetReadDeadline sets the read deadline of the connection.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.deadline(func() error { return c.nc.SetReadDeadline(t) })
}

// SetWriteDeadline sets the write deadline of the connection.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.deadline(func() error { return c.nc.SetWriteDeadline(t) })
}

func (c *Conn) deadline(set func() error) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.released {
		return net.ErrClosed
	}
	return set()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
