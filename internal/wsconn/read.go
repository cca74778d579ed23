package wsconn

import (
	"errors"
	"io"
	"sync"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/wsframe"
)

// ErrProtocol is returned by Read when the server breaks RFC 6455.
var ErrProtocol = errors.New("wsconn: websocket protocol error")

// lost is Read's error for a connection that failed or ended without a
// close frame: a *CloseError, unless this end is closing it.
func (c *Conn) lost(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if c.closing.Load() {
		return err
	}
	return &CloseError{Code: CodeAbnormal, Err: err}
}

// setReadErr makes err Read's sticky error; the stream is over then.
// io.EOF is a clean end, a *CloseError a cut; anything else comes from
// this end closing the connection, whose Close or Abort said how it ended.
func (c *Conn) setReadErr(err error) {
	c.rerr = err
	var ce *CloseError
	switch {
	case err == io.EOF:
		c.setEnd(nil)
	case errors.As(err, &ce):
		c.setEnd(ce)
	}
	c.markDone()
	if c.readEnd != nil {
		c.readEndOnce.Do(func() { close(c.readEnd) })
	}
}

// Read reads payload bytes of data frames. It answers pings with pongs and
// returns io.EOF once the peer's close frame with code 1000 (or without a
// code) arrives, or, with Subprotocol, the peer's end-of-stream marker. Any
// other end is a *CloseError: a close frame with another code, a
// connection that ended without a close frame, a protocol error.
func (c *Conn) Read(p []byte) (int, error) {
	if c.peerEOF.Load() {
		return 0, io.EOF
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	for {
		// Again under rmu: the Read that saw the marker handed the read
		// state to watch before this one got the lock.
		if c.peerEOF.Load() {
			return 0, io.EOF
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if c.inPayload {
			if c.h.OpCode.IsControl() {
				if err := c.readControl(); err != nil {
					return 0, err
				}
				continue
			}
			if c.left == 0 {
				c.inPayload = false
				continue
			}
			n := len(p)
			if int64(n) > c.left {
				n = int(c.left)
			}
			// The whole piece of the frame that fits in p: a frame comes
			// in one piece from its sender, and reading it whole lets a
			// relay pass it on in one write instead of one per TLS record.
			n, err := io.ReadFull(c.r, p[:n])
			if c.h.Masked {
				ws.Cipher(p[:n], c.h.Mask, c.off)
			}
			c.off += n
			c.left -= int64(n)
			if err != nil && !isTimeout(err) {
				err = c.lost(err)
				c.setReadErr(err)
			}
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		if err := c.readHeader(); err != nil {
			return 0, err
		}
		if c.isMarker() {
			c.inPayload = false
			c.peerEOF.Store(true)
			// Someone must keep reading: to answer pings, and to see the
			// close frame that ends the stream, so that Done closes even
			// when the caller, having seen EOF, only writes from now on.
			go c.watch()
			return 0, io.EOF
		}
	}
}

// frameBufs hold one frame's payload while WriteTo passes it on; a buffer
// is taken only when data is there, so an idle stream holds none.
var frameBufs = sync.Pool{New: func() any {
	b := make([]byte, 256<<10)
	return &b
}}

// WriteTo copies the stream to w until EOF, a frame's payload (up to
// 256 KiB) per w.Write: a relay to a local TCP connection then makes one
// write per frame rather than one per 16 KiB TLS record. io.Copy uses it.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if !c.peerEOF.Load() {
			// Wait for data before taking a buffer. An error here comes
			// back from Read below, through its own handling. Not after
			// the stream ended: the conn may carry another stream by then.
			c.rmu.Lock()
			if c.rerr == nil {
				_, _ = c.r.Peek(1)
			}
			c.rmu.Unlock()
		}
		bp := frameBufs.Get().(*[]byte)
		n, err := c.Read(*bp)
		if n > 0 {
			wn, werr := w.Write((*bp)[:n])
			total += int64(wn)
			if werr == nil && wn < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				frameBufs.Put(bp)
				return total, werr
			}
		}
		frameBufs.Put(bp)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// isMarker reports whether the header just read is the end-of-stream
// marker: an empty binary frame with FIN, on a tether-stream.v1 conn.
func (c *Conn) isMarker() bool {
	return c.halfClose && wsframe.IsMarker(&c.h)
}

// watch reads what follows the peer's end-of-stream marker until the
// stream ends: control frames are handled as Read would, and a data frame
// breaks the protocol (the hub never relays one). It owns the read state,
// which Read no longer touches once peerEOF is set.
func (c *Conn) watch() {
	for {
		if c.inPayload {
			if !c.h.OpCode.IsControl() {
				c.protocolError("data frame after the end-of-stream marker")
				return
			}
			if err := c.readControl(); err != nil {
				return
			}
			continue
		}
		// A timeout here means the caller set a read deadline: it asked
		// for reads to stop, so the watch stops too.
		if err := c.readHeader(); err != nil {
			return
		}
	}
}

// readHeader reads and checks the next frame header. On success
// c.inPayload is set and c.h and c.left describe the payload that follows.
func (c *Conn) readHeader() error {
	if err := c.hr.Read(c.r, &c.h); err != nil {
		if err == ws.ErrHeaderLengthMSB {
			return c.protocolError("frame length has its top bit set")
		}
		if !isTimeout(err) {
			// Even between frames: a stream ends with a close frame,
			// so a connection that just ends was cut.
			err = c.lost(err)
			c.setReadErr(err)
		}
		return err
	}
	c.left, c.off, c.inPayload = c.h.Length, 0, true
	if err := wsframe.Check(&c.h, false); err != nil {
		what := err.Error()
		if err == wsframe.ErrReservedBits {
			// This end negotiates no extension, the bits' only use: say so.
			what += " without an extension"
		}
		return c.protocolError(what)
	}
	return nil
}

// readControl reads the rest of a control frame's payload and acts on it.
func (c *Conn) readControl() error {
	for c.left > 0 {
		n, err := c.r.Read(c.ctrl[c.off : c.off+int(c.left)])
		c.off += n
		c.left -= int64(n)
		if c.left == 0 {
			break
		}
		if err != nil {
			if !isTimeout(err) {
				err = c.lost(err)
				c.setReadErr(err)
			}
			return err
		}
	}
	payload := c.ctrl[:c.off]
	if c.h.Masked {
		ws.Cipher(payload, c.h.Mask, 0)
	}
	c.inPayload = false
	switch c.h.OpCode {
	case ws.OpPing:
		// A pong that fails to go out is not Read's error: the next read
		// or write meets the broken connection anyway.
		_ = c.writeControl(ws.OpPong, payload)
	case ws.OpClose:
		if err := wsframe.CheckClose(payload); err != nil {
			return c.protocolError(err.Error())
		}
		// Echo the code back, as RFC 6455 §5.5.1 asks, then report EOF
		// or the cut; Close ends the TCP connection. The end is recorded
		// before the echo closes Done.
		var end error = io.EOF
		code, reason := ws.ParseCloseFrameData(payload)
		if n := closeCode(code); !cleanClose(n) {
			end = &CloseError{Code: n, Reason: reason}
			c.setEnd(end)
		} else {
			c.setEnd(nil)
		}
		_ = c.writeControl(ws.OpClose, wsframe.CloseEcho(payload))
		c.gotClose.Store(true)
		c.setReadErr(end)
		return end
	}
	return nil
}

// closeCode is a close frame's code as a number, CodeNoStatus for none.
func closeCode(code ws.StatusCode) int {
	if code.Empty() {
		return CodeNoStatus
	}
	return int(code)
}

func (c *Conn) protocolError(what string) error {
	c.setReadErr(&CloseError{Code: int(ws.StatusProtocolError), Reason: what, Err: ErrProtocol})
	const reason = "protocol error"
	var body [2 + len(reason)]byte
	ws.PutCloseFrameBody(body[:], ws.StatusProtocolError, reason)
	_ = c.writeControl(ws.OpClose, body[:])
	return c.rerr
}
