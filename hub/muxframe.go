package hub

// The hub's end of a session's WebSocket (wire.SubprotocolMux) as the byte
// stream yamux runs over: the payloads of the end's frames, concatenated,
// one way, and the hub's bytes in binary frames the other.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/batchconn"
	"github.com/tether-io/tether/internal/wsframe"
)

const (
	// muxIdle ends a session from which nothing came for this long: the
	// ends' keep-alive (muxconn.Config, 30 s) comes well within it.
	muxIdle = 90 * time.Second
	// muxWriteTimeout bounds one write to the session's connection: an
	// end that stopped reading for that long has lost its session.
	muxWriteTimeout = 30 * time.Second
	// muxCloseTimeout bounds the last write and the close frame.
	muxCloseTimeout = time.Second
)

// errMuxClosed is returned by a frameConn's writes once it is closed.
var errMuxClosed = errors.New("session connection closed")

// frameConn is the WebSocket of a session, hijacked, as an
// io.ReadWriteCloser for yamux.Server. Reads are the payloads of the end's
// data frames (masked, as a client's; any opcode, any fragmentation),
// pings answered and a close frame ending them. Each write leaves as one
// binary frame in one write to the connection, on the writer's goroutine:
// yamux's writer gathers the frames of every stream ready together into
// one write already, so a goroutine of the connection's own would only
// add a hand-off per message.
type frameConn struct {
	conn  net.Conn
	batch *batchconn.Conn // beneath conn's TLS, when the listener put one there

	// Read state, used by yamux's reader alone.
	r    *bufio.Reader
	hbuf [wsframe.MaxHeaderSize]byte
	h    ws.Header
	left int64 // payload bytes left in the current data frame
	off  int   // payload bytes of the current frame already unmasked
	ctrl [ws.MaxControlFramePayloadSize]byte
	rerr error

	// wlock is held while writing to conn: a channel, so that Close can
	// give up on a writer stuck on an end that does not read.
	wlock chan struct{}
	hdr   [muxHdrRoom]byte // the data frame's header, under wlock
	wbufs net.Buffers      // what one write sends, under wlock

	mu      sync.Mutex
	ctrlq   [][]byte // control frames to send, whole, by whoever writes next
	werr    error    // sticky
	closing bool     // no data frame goes out any more, only the close frame
	bye     []byte   // the close frame's body, once closing
	byeSent bool

	closeOnce sync.Once
}

// newFrameConn wraps conn, upgraded; hijacked holds what net/http read
// ahead of the first frame.
func newFrameConn(conn net.Conn, hijacked *bufio.Reader) *frameConn {
	var src io.Reader = conn
	if hijacked != nil && hijacked.Buffered() > 0 {
		src = io.MultiReader(io.LimitReader(hijacked, int64(hijacked.Buffered())), conn)
	}
	c := &frameConn{
		conn:  conn,
		batch: batchconn.Find(conn),
		r:     bufio.NewReaderSize(src, 16<<10),
		wlock: make(chan struct{}, 1),
	}
	return c
}

// Read returns payload bytes of the end's data frames.
func (c *frameConn) Read(p []byte) (int, error) {
	for c.left == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if err := c.next(); err != nil {
			c.rerr = err
			return 0, err
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	ws.Cipher(p[:n], c.h.Mask, c.off)
	c.off += n
	c.left -= int64(n)
	if err != nil && c.left > 0 {
		c.rerr = err
	}
	if n > 0 {
		return n, nil
	}
	return 0, err
}

// next reads frame headers until a data frame with payload begins,
// serving control frames on the way.
func (c *frameConn) next() error {
	for {
		c.conn.SetReadDeadline(time.Now().Add(muxIdle))
		if err := wsframe.ReadHeader(c.r, &c.hbuf, &c.h); err != nil {
			return err
		}
		if err := wsframe.Check(&c.h, true); err != nil {
			c.closeWith(ws.NewCloseFrameBody(ws.StatusProtocolError, err.Error()))
			return err
		}
		if c.h.OpCode.IsData() {
			if c.h.Length > 0 {
				c.left, c.off = c.h.Length, 0
				return nil
			}
			continue
		}
		payload := c.ctrl[:c.h.Length]
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return err
		}
		ws.Cipher(payload, c.h.Mask, 0)
		switch c.h.OpCode {
		case ws.OpPing:
			c.control(ws.OpPong, payload)
		case ws.OpClose:
			if err := wsframe.CheckClose(payload); err != nil {
				c.closeWith(ws.NewCloseFrameBody(ws.StatusProtocolError, err.Error()))
				return err
			}
			c.closeWith(wsframe.CloseEcho(payload))
			return io.EOF
		}
	}
}

// control sends a control frame: at once when no write is in progress,
// else right behind it, so that the reader never waits on a writer.
func (c *frameConn) control(op ws.OpCode, payload []byte) {
	c.mu.Lock()
	if c.closing || c.werr != nil {
		c.mu.Unlock()
		return
	}
	c.ctrlq = append(c.ctrlq, wsframe.AppendFrame(nil, op, payload))
	c.mu.Unlock()
	c.flushOthers()
}

// muxHdrRoom is the room WriteRoomed wants in front of the payload: the
// largest unmasked header.
const muxHdrRoom = 10

// HeaderRoom tells yamux's writer to gather behind muxHdrRoom free bytes.
func (c *frameConn) HeaderRoom() int { return muxHdrRoom }

// WriteRoomed sends b[muxHdrRoom:] as one binary frame, its header put in
// the room in front: one record where there is TLS, no copy.
func (c *frameConn) WriteRoomed(b []byte) (int, error) {
	n := len(b) - muxHdrRoom
	if n <= 0 {
		return 0, nil
	}
	start := muxHdrRoom - wsframe.HeaderSize(n, false)
	wsframe.PutHeader(b[start:], ws.OpBinary, true, n)
	c.wlock <- struct{}{}
	err := c.writeData(b[start:], nil)
	<-c.wlock
	return c.wrote(n, err)
}

// WritesBounded tells yamux that each write ends within muxWriteTimeout
// (writeData's deadline), so that streams write to the connection
// themselves rather than through yamux's writer goroutine.
func (c *frameConn) WritesBounded() bool { return true }

// Write sends p as one binary frame.
func (c *frameConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wlock <- struct{}{}
	n := wsframe.PutHeader(c.hdr[:], ws.OpBinary, true, len(p))
	err := c.writeData(c.hdr[:n], p)
	<-c.wlock
	return c.wrote(len(p), err)
}

// wrote flushes what was queued meanwhile, after a write of n bytes that
// ended with err.
func (c *frameConn) wrote(n int, err error) (int, error) {
	c.flushOthers()
	if err != nil {
		return 0, err
	}
	return n, nil
}

// writeData writes the control frames queued, a and b. The caller holds
// wlock.
func (c *frameConn) writeData(a, b []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(muxWriteTimeout))
	// Checked after the deadline was set: closing sets closing before its
	// short deadline, so either this sees it or the short deadline
	// replaces the long one.
	c.mu.Lock()
	err, ctrl := c.werr, c.ctrlq
	if err == nil && c.closing {
		err = errMuxClosed
	}
	c.ctrlq = nil
	c.mu.Unlock()
	if err != nil {
		return err
	}
	c.wbufs = append(append(c.wbufs[:0], ctrl...), a)
	if b != nil {
		c.wbufs = append(c.wbufs, b)
	}
	return c.send(c.wbufs)
}

// send writes bufs in one write to the connection where batchconn is
// beneath its TLS (writev on plain TCP), and makes a failure sticky. The
// caller holds wlock.
func (c *frameConn) send(bufs net.Buffers) error {
	write := func() error {
		_, err := bufs.WriteTo(c.conn)
		return err
	}
	var err error
	if c.batch != nil {
		err = c.batch.Batch(write)
	} else {
		err = write()
	}
	if err != nil {
		c.mu.Lock()
		if c.werr == nil {
			c.werr = err
		}
		c.mu.Unlock()
	}
	return err
}

// flushOthers sends the control frames and the close frame queued while
// the connection was being written, unless someone else is writing: that
// one looks again once done.
func (c *frameConn) flushOthers() {
	for {
		c.mu.Lock()
		need := c.werr == nil && (len(c.ctrlq) > 0 || c.closing && !c.byeSent)
		c.mu.Unlock()
		if !need {
			return
		}
		select {
		case c.wlock <- struct{}{}:
		default:
			return
		}
		c.writeOthers()
		<-c.wlock
	}
}

// writeOthers writes the control frames queued and, when closing, the
// close frame. The caller holds wlock.
func (c *frameConn) writeOthers() {
	c.conn.SetWriteDeadline(time.Now().Add(muxWriteTimeout))
	c.mu.Lock()
	if c.werr != nil {
		c.mu.Unlock()
		return
	}
	bufs := net.Buffers(c.ctrlq)
	c.ctrlq = nil
	closing := c.closing
	if closing && !c.byeSent {
		c.byeSent = true
		bufs = append(bufs, wsframe.AppendFrame(nil, ws.OpClose, c.bye))
	}
	c.mu.Unlock()
	if closing {
		// As in writeData: set after closing was seen, so the short
		// deadline is the one in force.
		c.conn.SetWriteDeadline(time.Now().Add(muxCloseTimeout))
	}
	if len(bufs) > 0 {
		_ = c.send(bufs)
	}
}

// closeWith makes the close frame with body the next and last frame out:
// written at once when nothing is being written, else right behind the
// write in progress, whose deadline shrinks to muxCloseTimeout. The
// connection stays open for Close.
func (c *frameConn) closeWith(body []byte) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing, c.bye = true, body
	c.mu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(muxCloseTimeout))
	c.flushOthers()
}

// CloseWith closes the connection with a close frame of code and reason.
func (c *frameConn) CloseWith(code ws.StatusCode, reason string) error {
	c.closeWith(ws.NewCloseFrameBody(code, reason))
	return c.Close()
}

// Close sends a close frame (1000 unless said otherwise before) behind
// the write in progress, within muxCloseTimeout, then closes the
// connection.
func (c *frameConn) Close() error {
	c.closeOnce.Do(func() {
		c.closeWith(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
		t := time.NewTimer(muxCloseTimeout + 100*time.Millisecond)
		select {
		case c.wlock <- struct{}{}:
			c.writeOthers()
			<-c.wlock
		case <-t.C:
		}
		t.Stop()
		// The TCP conn under any TLS: the close frame said goodbye, and
		// close_notify could block on an end that does not read.
		if tc, ok := c.conn.(*tls.Conn); ok {
			tc.NetConn().Close()
		} else {
			c.conn.Close()
		}
	})
	return nil
}
