package wsconn

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/wsframe"
)

const (
	// maxFrame is the largest frame Write sends. 256 KiB is the top of the
	// range measured as best (docs/benchmarks.md), and being a multiple of
	// 16 KiB it fills whole TLS records.
	maxFrame = 256 << 10
	// maxHeader is the size of a masked client header with a 64-bit length.
	maxHeader = wsframe.MaxHeaderSize
	// maxChunk is the payload of a full frame: header + payload == maxFrame.
	maxChunk = maxFrame - maxHeader
)

// ErrWriteClosed is returned by Write after CloseWrite. It wraps
// net.ErrClosed: like a closed conn, it is the caller's own doing.
var ErrWriteClosed = fmt.Errorf("wsconn: write after CloseWrite: %w", net.ErrClosed)

// writeControl sends one control frame. A close frame is sent at most once.
func (c *Conn) writeControl(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent || c.wbroken {
		return net.ErrClosed
	}
	if op == ws.OpClose {
		c.closeSent = true
		// Sent or not, nothing more will pass either way.
		defer c.markDone()
	}
	return c.writeRaw(wsframe.AppendMaskedFrame(c.cbuf[:0], op, payload))
}

// writeErr is the error of a data write that cannot go out. The caller
// holds wmu.
func (c *Conn) writeErr() error {
	switch {
	case c.closeSent || c.wbroken:
		return net.ErrClosed
	case c.eofSent:
		return ErrWriteClosed
	}
	return nil
}

// Write sends p as one binary frame, or as frames of 256 KiB when it is
// larger. It returns how many bytes of p went out in whole frames. A Write
// of no bytes sends nothing: an empty frame is the end-of-stream marker.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeErr(); err != nil {
		return 0, err
	}
	if need := min(len(p)+maxHeader, maxFrame); len(c.wbuf) < need {
		// Sized to what is written, up to a full frame: a stream of small
		// messages keeps a small buffer.
		c.wbuf = make([]byte, need)
	}
	done := 0
	for done < len(p) {
		chunk := min(len(p)-done, maxChunk)
		// A copy is masked: the caller's p must stay as it was.
		var frame []byte
		if c.zeroMask {
			n, _ := wsframe.PutMaskedHeader(c.wbuf, ws.OpBinary, true, chunk)
			clear(c.wbuf[n-4 : n])
			frame = append(c.wbuf[:n], p[done:done+chunk]...)
		} else {
			frame = wsframe.AppendMaskedFrame(c.wbuf[:0], ws.OpBinary, p[done:done+chunk])
		}
		if err := c.writeRaw(frame); err != nil {
			return done, err
		}
		done += chunk
	}
	return done, nil
}

// HeaderRoom is how many bytes WriteRoomed wants free in front of the
// payload: room for the largest masked header.
func (c *Conn) HeaderRoom() int { return maxHeader }

// WriteRoomed sends b[HeaderRoom():] as one binary frame of any size,
// built where it is: the header goes into the room in front and the
// payload is masked in place, so a writer that owns b and has framed
// bytes of its own to send (a session's multiplexer gathering the frames
// of its streams) costs no copy. b is the caller's again once it returns.
// It returns how many payload bytes went out.
func (c *Conn) WriteRoomed(b []byte) (int, error) {
	n := len(b) - maxHeader
	if n <= 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeErr(); err != nil {
		return 0, err
	}
	start := maxHeader - wsframe.HeaderSize(n, true)
	_, mask := wsframe.PutMaskedHeader(b[start:], ws.OpBinary, true, n)
	ws.Cipher(b[maxHeader:], mask, 0)
	if err := c.writeRaw(b[start:]); err != nil {
		return 0, err
	}
	return n, nil
}

// smallChunk is the payload ReadFrom reads at first: a stream that only
// ever carries small messages (a shell, a request and its answer) needs
// no more.
const smallChunk = 16<<10 - maxHeader

// ReadFrom sends what it reads from src as binary frames, reading straight
// into the frame buffer (header room in front) so a read becomes a frame
// with one copy fewer than Write. io.Copy uses it.
//
// It reads into a 16 KiB buffer of its own, and into a pooled 256 KiB one
// only while reads fill the small one (bulk data): most streams never need
// the large one, and a stream blocked in src.Read between bursts holds 16
// KiB rather than 256, which is what a thousand open streams cost.
func (c *Conn) ReadFrom(src io.Reader) (int64, error) {
	// Buffers of its own: reading src must not hold the write lock, or
	// pongs and Close would wait on src.
	small := make([]byte, maxHeader+smallChunk)
	var big *[]byte
	defer func() {
		if big != nil {
			frameBufs.Put(big)
		}
	}()
	var total int64
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, rerr := src.Read(buf[maxHeader:])
		if n > 0 {
			start := maxHeader - wsframe.HeaderSize(n, true)
			_, mask := wsframe.PutMaskedHeader(buf[start:], ws.OpBinary, true, n)
			if c.zeroMask {
				clear(buf[maxHeader-4 : maxHeader])
			} else {
				ws.Cipher(buf[maxHeader:maxHeader+n], mask, 0)
			}
			c.wmu.Lock()
			werr := c.writeErr()
			if werr == nil {
				werr = c.writeRaw(buf[start : maxHeader+n])
			}
			c.wmu.Unlock()
			if werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
		switch {
		case big == nil && n == smallChunk:
			big = frameBufs.Get().(*[]byte)
		case big != nil && n <= smallChunk:
			frameBufs.Put(big)
			big = nil
		}
	}
}

// WritesBounded reports whether every write ends within a deadline of
// its own (a session's conn: DialSession), so that the session's streams
// may write to it directly (internal/yamux).
func (c *Conn) WritesBounded() bool { return c.writeTimeout > 0 }

// writeRaw writes one whole frame in one Write of the TLS conn and, with
// the batching shim, one write syscall. The caller holds wmu.
func (c *Conn) writeRaw(b []byte) error {
	var (
		n   int
		err error
	)
	if c.writeTimeout > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	if c.batch != nil {
		err = c.batch.Batch(func() error {
			var werr error
			n, werr = c.nc.Write(b)
			return werr
		})
	} else {
		n, err = c.nc.Write(b)
	}
	if err != nil && (n > 0 || c.batch != nil || !isTimeout(err)) {
		// Part of a frame may be on the wire (TLS also breaks for good
		// after a failed write), or the connection failed: nothing more
		// may be framed after it. Only a timeout that wrote nothing
		// leaves the stream as it was.
		c.wbroken = true
		if !c.closing.Load() {
			c.setEnd(&CloseError{Code: CodeAbnormal, Err: err})
		}
		c.markDone()
	}
	return err
}

// CloseWrite ends this side's direction of the stream: with Subprotocol it
// sends the end-of-stream marker once, after which Write fails with
// ErrWriteClosed while Read goes on until the peer's own EOF. Without it
// (the hub selected no subprotocol) it calls Close, since closing is the
// only EOF a peer of the plain protocol understands.
func (c *Conn) CloseWrite() error {
	if !c.halfClose {
		return c.Close()
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent || c.wbroken {
		return net.ErrClosed
	}
	if c.eofSent {
		return nil
	}
	c.eofSent = true
	return c.writeRaw(wsframe.AppendMaskedFrame(c.cbuf[:0], ws.OpBinary, nil))
}
