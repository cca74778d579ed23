package broker

import (
	"bytes"
	"io"
	"net"
	"testing"

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
