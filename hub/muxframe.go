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
	// muxPending bounds the bytes yamux may hand the writer before it
	// waits for them to go out: enough for a frame of every stream ready
	// together, little for an end that reads slowly.
	muxPending = 512 << 10
	// muxHdrRoom is kept free in front of the gathered bytes for the
	// frame header, so header and payload leave in one Write.
	muxHdrRoom = 10
	// muxCloseTimeout bounds the last flush and the close frame.
	muxCloseTimeout = time.Second
)

// errMuxClosed is returned by a frameConn's writes once it is closed.
var errMuxClosed = errors.New("session connection closed")

// frameConn is the WebSocket of a session, hijacked, as an
// io.ReadWriteCloser for yamux.Server. Reads are the payloads of the end's
// data frames (masked, as a client's; any opcode, any fragmentation),
// pings answered and a close frame ending them. Writes are gathered while
// the connection is busy and leave as one binary frame per write to it,
// so that the frames of many streams ready together cost one TLS write.
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

	mu      sync.Mutex
	cond    *sync.Cond // writers waiting for room, the writer for work
	pending []byte     // gathered bytes behind muxHdrRoom
	spare   []byte     // the other buffer, while the writer sends one
	ctrlq   [][]byte   // control frames to send, whole
	werr    error      // sticky
	closing bool       // Close began: the writer flushes, says goodbye, ends
	bye     []byte     // the close frame's body

	closeOnce sync.Once
	done      chan struct{} // closed when the writer returned
}

// newFrameConn wraps conn, upgraded; hijacked holds what net/http read
// ahead of the first frame.
func newFrameConn(conn net.Conn, hijacked *bufio.Reader) *frameConn {
	var src io.Reader = conn
	if hijacked != nil && hijacked.Buffered() > 0 {
		src = io.MultiReader(io.LimitReader(hijacked, int64(hijacked.Buffered())), conn)
	}
	c := &frameConn{
		conn:    conn,
		batch:   batchconn.Find(conn),
		r:       bufio.NewReaderSize(src, 16<<10),
		pending: make([]byte, muxHdrRoom, 64<<10),
		spare:   make([]byte, muxHdrRoom, 64<<10),
		done:    make(chan struct{}),
	}
	c.cond = sync.NewCond(&c.mu)
	go c.writeLoop()
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

// control queues a control frame ahead of the data gathered.
func (c *frameConn) control(op ws.OpCode, payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.werr != nil {
		return
	}
	c.ctrlq = append(c.ctrlq, wsframe.AppendFrame(nil, op, payload))
	c.cond.Broadcast()
}

// Write gathers p for the writer; it waits while muxPending bytes are
// waiting already.
func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.werr == nil && !c.closing && len(c.pending)-muxHdrRoom >= muxPending {
		c.cond.Wait()
	}
	if c.werr != nil {
		return 0, c.werr
	}
	if c.closing {
		return 0, errMuxClosed
	}
	c.pending = append(c.pending, p...)
	c.cond.Broadcast()
	return len(p), nil
}

// writeLoop sends what Write gathered, one frame per round, until Close
// or a failed write.
func (c *frameConn) writeLoop() {
	defer close(c.done)
	for {
		c.mu.Lock()
		for c.werr == nil && !c.closing && len(c.pending) == muxHdrRoom && len(c.ctrlq) == 0 {
			c.cond.Wait()
		}
		if c.werr != nil {
			c.mu.Unlock()
			return
		}
		data, ctrl, closing, bye := c.pending, c.ctrlq, c.closing, c.bye
		c.pending, c.spare, c.ctrlq = c.spare, nil, nil
		c.cond.Broadcast() // room again for Write
		c.mu.Unlock()

		timeout := muxWriteTimeout
		if closing {
			timeout = muxCloseTimeout
		}
		err := c.send(data, ctrl, closing, bye, timeout)
		c.mu.Lock()
		c.spare = data[:muxHdrRoom]
		if err != nil && c.werr == nil {
			c.werr = err
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		if err != nil || closing {
			return
		}
	}
}

// send writes one round: the control frames, the data gathered as one
// binary frame, and, when closing, the close frame, in one write to the
// connection where batchconn is beneath its TLS.
func (c *frameConn) send(data []byte, ctrl [][]byte, closing bool, bye []byte, timeout time.Duration) error {
	c.conn.SetWriteDeadline(time.Now().Add(timeout))
	write := func() error {
		for _, f := range ctrl {
			if _, err := c.conn.Write(f); err != nil {
				return err
			}
		}
		if n := len(data) - muxHdrRoom; n > 0 {
			start := muxHdrRoom - wsframe.HeaderSize(n, false)
			wsframe.PutHeader(data[start:], ws.OpBinary, true, n)
			if _, err := c.conn.Write(data[start:]); err != nil {
				return err
			}
		}
		if closing {
			_, err := c.conn.Write(wsframe.AppendFrame(nil, ws.OpClose, bye))
			return err
		}
		return nil
	}
	if c.batch != nil {
		return c.batch.Batch(write)
	}
	return write()
}

// closeWith makes the writer send what is gathered and a close frame with
// body, then end; the connection stays open for Close.
func (c *frameConn) closeWith(body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.closing, c.bye = true, body
	c.cond.Broadcast()
}

// CloseWith closes the connection with a close frame of code and reason.
func (c *frameConn) CloseWith(code ws.StatusCode, reason string) error {
	c.closeWith(ws.NewCloseFrameBody(code, reason))
	return c.Close()
}

// Close sends what is gathered and a close frame (1000 unless said
// otherwise before), within muxCloseTimeout, then closes the connection.
func (c *frameConn) Close() error {
	c.closeOnce.Do(func() {
		c.closeWith(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
		t := time.NewTimer(muxCloseTimeout + 100*time.Millisecond)
		select {
		case <-c.done:
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
