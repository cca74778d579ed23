package broker

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/wstest"
)

// TestWSConnFrames: bytes net/http read ahead come first, a ping is
// answered in between, a fragmented message reads as one stream, and a
// close frame ends it with io.EOF after a close frame back.
func TestWSConnFrames(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	var early bytes.Buffer
	ws.WriteFrame(&early, ws.MaskFrame(ws.NewBinaryFrame([]byte("ab"))))
	c := &wsConn{Conn: srv, pending: early.Bytes()}
	defer c.Close()

	errc := make(chan error, 1)
	var pong, closing ws.Frame
	go func() {
		errc <- func() error {
			if err := ws.WriteFrame(cli, ws.MaskFrame(ws.NewPingFrame([]byte("hi")))); err != nil {
				return err
			}
			var err error
			if pong, err = wstest.ReadFrame(cli, ws.MaxControlFramePayloadSize); err != nil {
				return err
			}
			first := ws.MaskFrame(ws.NewFrame(ws.OpBinary, false, []byte("cd")))
			last := ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, []byte("ef")))
			for _, f := range []ws.Frame{first, last, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))} {
				if err := ws.WriteFrame(cli, f); err != nil {
					return err
				}
			}
			closing, err = wstest.ReadFrame(cli, ws.MaxControlFramePayloadSize)
			return err
		}()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("client: %v", err)
	}
	if string(got) != "abcdef" {
		t.Errorf("read %q, want abcdef", got)
	}
	if pong.Header.OpCode != ws.OpPong || string(pong.Payload) != "hi" {
		t.Errorf("ping answered with %v %q", pong.Header.OpCode, pong.Payload)
	}
	if code, _ := ws.ParseCloseFrameData(closing.Payload); closing.Header.OpCode != ws.OpClose || code != ws.StatusNormalClosure {
		t.Errorf("close answered with %v %d", closing.Header.OpCode, code)
	}
}

// TestWSConnRefusesUnmasked: a client frame without a mask breaks RFC 6455
// and ends the connection with a protocol error.
func TestWSConnRefusesUnmasked(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	c := &wsConn{Conn: srv}
	defer c.Close()
	go func() {
		_ = ws.WriteFrame(cli, ws.NewBinaryFrame([]byte("x")))
		_, _ = io.Copy(io.Discard, cli)
	}()
	if _, err := c.Read(make([]byte, 8)); err != errWSProtocol {
		t.Fatalf("read: %v, want %v", err, errWSProtocol)
	}
}

// TestWSConnWriteOneFrame: each Write is one binary frame.
func TestWSConnWriteOneFrame(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	c := &wsConn{Conn: srv}
	defer c.Close()
	payload := bytes.Repeat([]byte{7}, 300) // a 16-bit length
	go func() { _, _ = c.Write(payload) }()
	f, err := wstest.ReadFrame(cli, int64(len(payload)))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Header.Fin || f.Header.OpCode != ws.OpBinary || f.Header.Masked || !bytes.Equal(f.Payload, payload) {
		t.Fatalf("got frame %+v", f.Header)
	}
}

// memConn is a connection whose peer sent in and reads nothing back:
// what is written to it is kept in out. Reads and writes never block, so
// a fuzz run needs no goroutine.
type memConn struct {
	net.Conn
	in     *bytes.Reader
	out    bytes.Buffer
	closed bool
}

func (c *memConn) Read(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.in.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(p)
}

func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
func (c *memConn) Close() error                     { c.closed = true; return nil }

// wsReference reads a client's bytes as RFC 6455 and the broker's rules
// say wsConn must, with gobwas/ws's reader: the payload of the binary
// messages before the frame that ends the connection, the pings answered
// on the way, the error Read ends with (its text), and the close code the
// broker answers with (0: none).
func wsReference(b []byte) (data []byte, pings [][]byte, end string, closeCode ws.StatusCode) {
	r := bytes.NewReader(b)
	inMsg := false
	for {
		h, err := ws.ReadHeader(r)
		switch {
		case err != nil:
			return data, pings, err.Error(), 0
		case h.Rsv != 0, !h.Masked, h.OpCode.IsReserved(),
			h.OpCode.IsControl() && (!h.Fin || h.Length > ws.MaxControlFramePayloadSize),
			h.OpCode == ws.OpContinuation && !inMsg,
			h.OpCode == ws.OpBinary && inMsg, h.OpCode == ws.OpText && inMsg:
			return data, pings, errWSProtocol.Error(), ws.StatusProtocolError
		case h.OpCode == ws.OpText:
			return data, pings, "broker: text message on an MQTT connection", ws.StatusUnsupportedData
		}
		p := make([]byte, min(h.Length, int64(r.Len())))
		_, _ = io.ReadFull(r, p)
		ws.Cipher(p, h.Mask, 0)
		if h.OpCode.IsData() {
			data = append(data, p...)
			if int64(len(p)) < h.Length {
				return data, pings, io.ErrUnexpectedEOF.Error(), 0
			}
			inMsg = !h.Fin
			continue
		}
		switch {
		case int64(len(p)) < h.Length && len(p) == 0:
			return data, pings, io.EOF.Error(), 0
		case int64(len(p)) < h.Length:
			return data, pings, io.ErrUnexpectedEOF.Error(), 0
		case h.OpCode == ws.OpPing:
			pings = append(pings, p)
		case h.OpCode == ws.OpClose:
			code, _ := ws.ParseCloseFrameData(p)
			if code == ws.StatusNormalClosure || code == ws.StatusGoingAway || code.Empty() {
				return data, pings, io.EOF.Error(), ws.StatusNormalClosure
			}
			return data, pings, fmt.Sprintf("broker: websocket closed by the device: %d", code), ws.StatusNormalClosure
		}
	}
}

// maskedFrame is a client's frame.
func maskedFrame(op ws.OpCode, fin bool, p []byte) []byte {
	var b bytes.Buffer
	_ = ws.WriteFrame(&b, ws.MaskFrame(ws.NewFrame(op, fin, p)))
	return b.Bytes()
}

// FuzzWSConnRead feeds the broker's WebSocket reader what any client may
// send before it has authenticated, some of it read ahead by net/http, in
// reads of any size. Read must give exactly the payload of the binary
// messages before the frame that ends the connection, end with the error
// that frame calls for, answer each ping with its pong, and send the close
// frame RFC 6455 asks for, and nothing else: the same as a reference
// reader built on gobwas/ws's header reader.
func FuzzWSConnRead(f *testing.F) {
	join := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	hello := maskedFrame(ws.OpBinary, true, []byte("hello"))
	bye := maskedFrame(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	for _, b := range [][]byte{
		nil,
		hello,
		join(hello, bye),
		join(maskedFrame(ws.OpBinary, false, []byte("ab")), maskedFrame(ws.OpPing, true, []byte("hi")),
			maskedFrame(ws.OpContinuation, true, []byte("cd")), bye),
		join(maskedFrame(ws.OpBinary, true, bytes.Repeat([]byte{1}, 300)), maskedFrame(ws.OpPong, true, nil), bye),
		join(hello, maskedFrame(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusProtocolError, "no"))),
		join(hello, maskedFrame(ws.OpClose, true, []byte{3})),
		maskedFrame(ws.OpText, true, []byte("x")),
		maskedFrame(ws.OpContinuation, true, []byte("x")),
		join(maskedFrame(ws.OpBinary, false, []byte("a")), hello),
		{0x82, 0x01, 'x'},                       // unmasked
		{0xc2, 0x80, 1, 2, 3, 4},                // reserved bit
		{0x83, 0x80, 1, 2, 3, 4},                // reserved opcode
		{0x09, 0x80, 1, 2, 3, 4},                // fragmented ping
		{0x89, 0xfe, 0x00, 0x7e, 1, 2, 3, 4},    // oversized ping
		{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, // 64-bit length, top bit set
		{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 9, 1, 2, 3, 4, 'a'},
		hello[:4],
		maskedFrame(ws.OpPing, true, []byte("ping"))[:7],
	} {
		f.Add(b, uint8(len(b)/2), uint8(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, ahead, size uint8) {
		split := min(int(ahead), len(b))
		conn := &memConn{in: bytes.NewReader(b[split:])}
		c := &wsConn{Conn: conn, pending: bytes.Clone(b[:split])}
		buf := make([]byte, int(size)%64+1)
		var got []byte
		var err error
		for reads := 0; err == nil; reads++ {
			if reads > len(b)+1 {
				t.Fatalf("%d reads of %d bytes of input, no end", reads, len(b))
			}
			var n int
			n, err = c.Read(buf)
			got = append(got, buf[:n]...)
		}

		data, pings, end, code := wsReference(b)
		if !bytes.Equal(got, data) {
			t.Fatalf("read %q, want %q", got, data)
		}
		if err.Error() != end {
			t.Fatalf("read ended with %q, want %q", err, end)
		}
		out := bytes.NewReader(conn.out.Bytes())
		for _, ping := range pings {
			f, ferr := wstest.ReadFrame(out, ws.MaxControlFramePayloadSize)
			if ferr != nil || f.Header.OpCode != ws.OpPong || !f.Header.Fin || f.Header.Masked || !bytes.Equal(f.Payload, ping) {
				t.Fatalf("ping %q answered with %+v %q, %v", ping, f.Header, f.Payload, ferr)
			}
		}
		if code != 0 {
			f, ferr := wstest.ReadFrame(out, ws.MaxControlFramePayloadSize)
			got, _ := ws.ParseCloseFrameData(f.Payload)
			if ferr != nil || f.Header.OpCode != ws.OpClose || f.Header.Masked || got != code {
				t.Fatalf("answered with %+v %q, %v, want close %d", f.Header, f.Payload, ferr, code)
			}
		}
		if out.Len() != 0 {
			t.Fatalf("%d bytes more written: % x", out.Len(), conn.out.Bytes()[conn.out.Len()-out.Len():])
		}
	})
}
