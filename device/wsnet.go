package device

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tether-io/tether/wire"
)

// dialWebSocket opens MQTT over WebSocket (subprotocol "mqtt"), the way the
// Azure SDKs reach a hub through port 443 when 8883 is blocked.
func dialWebSocket(ctx context.Context, url string, d ws.Dialer) (net.Conn, error) {
	d.Protocols = []string{wire.SubprotocolMQTT}
	conn, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if hs.Protocol != wire.SubprotocolMQTT {
		conn.Close()
		return nil, errors.New("the hub did not agree to the mqtt WebSocket subprotocol")
	}
	return newWSNetConn(conn, br), nil
}

// wsNetConn carries the MQTT byte stream in binary WebSocket messages. MQTT
// packets need not align with messages, so Read runs across message
// boundaries; control frames are answered in passing.
type wsNetConn struct {
	net.Conn // the TLS connection under the WebSocket: addresses, deadlines, Close

	r     *wsutil.Reader
	ctrl  wsutil.FrameHandlerFunc
	inMsg bool // r is positioned inside a data message

	// wmu serialises whole frames: the MQTT writes and the pong or close
	// answers sent from Read share the connection.
	wmu  sync.Mutex
	wbuf bytes.Buffer
}

func newWSNetConn(conn net.Conn, br *bufio.Reader) *wsNetConn {
	c := &wsNetConn{Conn: conn}
	var src io.Reader = conn
	if br != nil {
		// The hub may have sent its first frames together with the 101.
		src = io.MultiReader(br, conn)
	}
	c.ctrl = wsutil.ControlFrameHandler(frameWriter{c}, ws.StateClientSide)
	c.r = &wsutil.Reader{Source: src, State: ws.StateClientSide, OnIntermediate: c.ctrl}
	return c
}

func (c *wsNetConn) Read(p []byte) (int, error) {
	for {
		if c.inMsg {
			n, err := c.r.Read(p)
			if err == io.EOF {
				c.inMsg = false
				if n == 0 {
					continue
				}
				err = nil
			}
			return n, err
		}
		hdr, err := c.r.NextFrame()
		if err != nil {
			return 0, err
		}
		if hdr.OpCode.IsControl() {
			if err := c.ctrl(hdr, c.r); err != nil {
				var closed wsutil.ClosedError
				if errors.As(err, &closed) {
					return 0, io.EOF
				}
				return 0, err
			}
			continue
		}
		c.inMsg = true
	}
}

// Write sends p as one masked binary message, header and payload in a
// single write so that each MQTT packet costs one TLS record.
func (c *wsNetConn) Write(p []byte) (int, error) {
	if err := c.writeFrame(ws.OpBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsNetConn) writeFrame(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	c.wbuf.Reset()
	if err := ws.WriteHeader(&c.wbuf, h); err != nil {
		return err
	}
	start := c.wbuf.Len()
	c.wbuf.Write(p)
	b := c.wbuf.Bytes()
	ws.Cipher(b[start:], h.Mask, 0)
	if _, err := c.Conn.Write(b); err != nil {
		return fmt.Errorf("websocket write: %w", err)
	}
	return nil
}

// frameWriter lets wsutil's control handler write its answers (already
// framed and masked) under the same lock as data frames.
type frameWriter struct{ c *wsNetConn }

func (w frameWriter) Write(p []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	return w.c.Conn.Write(p)
}
