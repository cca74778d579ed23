package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/wsframe"
	"github.com/tether-io/tether/wire"
)

// MQTT over WebSocket is served by wsConn rather than a general WebSocket
// library: an idle device holds its connection for days, and a library's
// per-connection buffers (net/http's hijacked 4 KiB reader and writer),
// deadline timers and contexts cost more than the rest of its session.
// wsConn reads frame headers and payloads straight from the TLS connection,
// which buffers a record already, and writes each MQTT packet as one frame
// in one write.

// errWSProtocol ends a connection whose peer broke RFC 6455.
var errWSProtocol = errors.New("broker: websocket protocol violation")

// isMQTT reports whether p is MQTT's WebSocket subprotocol. Tokens compare
// without regard to case: the Azure C device SDK offers "MQTT".
func isMQTT(p string) bool { return strings.EqualFold(p, wire.SubprotocolMQTT) }

// upgradeWS answers the WebSocket handshake of r, selecting the MQTT
// subprotocol, in the spelling the client offered, if offered, and returns
// the connection and that token. On an error the client has had its answer.
func upgradeWS(w http.ResponseWriter, r *http.Request) (*wsConn, string, error) {
	if err := checkOrigin(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return nil, "", err
	}
	u := ws.HTTPUpgrader{
		Timeout:  writeTimeout,
		Protocol: isMQTT,
	}
	conn, rw, hs, err := u.Upgrade(r, w)
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, "", err
	}
	c := &wsConn{Conn: conn}
	if n := rw.Reader.Buffered(); n > 0 {
		// A client may send its first frame without waiting for the
		// handshake's answer; net/http has read it already.
		b, _ := rw.Reader.Peek(n)
		c.pending = bytes.Clone(b)
	}
	return c, hs.Protocol, nil
}

// checkOrigin refuses a browser page of another site, as a WebSocket
// library does by default: the Origin, when sent, must name this host.
func checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil {
		return fmt.Errorf("failed to parse Origin header %q: %w", origin, err)
	}
	if !strings.EqualFold(r.Host, u.Host) {
		return fmt.Errorf("request Origin %q is not authorized for Host %q", u.Host, r.Host)
	}
	return nil
}

// wsConn is the byte stream carried in the binary messages of a server-side
// WebSocket connection. One goroutine reads (mochi's); writes may come from
// several and are serialised.
type wsConn struct {
	net.Conn // the hijacked connection

	// Read state, owned by the reader.
	pending []byte // bytes net/http read beyond the handshake
	left    int64  // payload bytes of the current data frame still unread
	mask    [4]byte
	pos     int  // offset into the current frame's payload, for unmasking
	inMsg   bool // a fragmented message is open: only continuations may follow

	wmu     sync.Mutex
	wclosed bool // a close frame went out: nothing more may be written
	once    sync.Once
	cerr    error
}

func (c *wsConn) Read(p []byte) (int, error) {
	for c.left == 0 {
		if err := c.nextFrame(); err != nil {
			return 0, err
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.readRaw(p[:min(int64(len(p)), c.left)])
	ws.Cipher(p[:n], c.mask, c.pos)
	c.pos += n
	c.left -= int64(n)
	if err == io.EOF && c.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == io.EOF {
		err = nil // the frame is complete; a later Read reports the end
	}
	return n, err
}

// readRaw reads what net/http buffered first, then the connection.
func (c *wsConn) readRaw(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

type rawReader struct{ c *wsConn }

func (r rawReader) Read(p []byte) (int, error) { return r.c.readRaw(p) }

// nextFrame reads frame headers, answering control frames, until one
// starts data (left > 0) or the connection ends.
func (c *wsConn) nextFrame() error {
	var (
		hbuf [wsframe.MaxHeaderSize]byte
		h    ws.Header
	)
	if err := wsframe.ReadHeader(rawReader{c}, &hbuf, &h); err != nil {
		return err
	}
	switch {
	case wsframe.Check(&h, true) != nil,
		h.OpCode == ws.OpContinuation && !c.inMsg,
		h.OpCode.IsData() && h.OpCode != ws.OpContinuation && c.inMsg:
		return c.fail(ws.StatusProtocolError, errWSProtocol)
	case h.OpCode == ws.OpText:
		return c.fail(ws.StatusUnsupportedData, errors.New("broker: text message on an MQTT connection"))
	case h.OpCode.IsControl():
		var buf [ws.MaxControlFramePayloadSize]byte
		payload := buf[:h.Length]
		if _, err := io.ReadFull(rawReader{c}, payload); err != nil {
			return err
		}
		ws.Cipher(payload, h.Mask, 0)
		switch h.OpCode {
		case ws.OpPing:
			return c.writeFrame(ws.OpPong, payload)
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(payload)
			// Not an echo: the peer's code may be one (1005, none at
			// all) that must not be sent.
			c.closeFrame(ws.StatusNormalClosure)
			if code == ws.StatusNormalClosure || code == ws.StatusGoingAway || code.Empty() {
				return io.EOF
			}
			return fmt.Errorf("broker: websocket closed by the device: %d", code)
		}
		return nil // pong
	}
	c.inMsg = !h.Fin
	c.left, c.mask, c.pos = h.Length, h.Mask, 0
	return nil
}

// fail closes the connection with code, after saying why.
func (c *wsConn) fail(code ws.StatusCode, err error) error {
	c.closeFrame(code)
	c.Conn.Close()
	return err
}

// Write sends p as one binary message, in one write.
func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.writeFrame(ws.OpBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) writeFrame(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed {
		return net.ErrClosed
	}
	_, err := c.Conn.Write(wsframe.AppendFrame(nil, op, p))
	return err
}

// closeFrame sends a close frame, once, unless a write is stalled: Close
// must not wait behind it (the stalled write is what it is to end).
func (c *wsConn) closeFrame(code ws.StatusCode) {
	if !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	if c.wclosed {
		return
	}
	c.wclosed = true
	_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Conn.Write(wsframe.AppendFrame(nil, ws.OpClose, ws.NewCloseFrameBody(code, "")))
}

// Close says goodbye with a close frame (normal closure) and closes the
// connection. Idempotent.
func (c *wsConn) Close() error {
	c.once.Do(func() {
		c.closeFrame(ws.StatusNormalClosure)
		c.cerr = c.Conn.Close()
	})
	return c.cerr
}
