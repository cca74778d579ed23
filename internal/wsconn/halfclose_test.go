package wsconn

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// isClosed reports whether ch is closed, without waiting.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitDone fails unless ch closes within a few seconds.
func waitDone(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("Done not closed after %s", what)
	}
}

// TestCloseWriteMarker: with the subprotocol selected, CloseWrite sends one
// empty binary FIN frame and nothing else, Write fails after it, and Read
// goes on until the peer's marker, which reads as io.EOF while the stream
// stays open until a close frame ends it.
func TestCloseWriteMarker(t *testing.T) {
	type seen struct {
		frames []ws.Header
		data   string
		close  []byte
		err    error
	}
	res := make(chan seen, 1)
	closeNow := make(chan struct{})
	ts := startServerProto(t, true, true, func(conn net.Conn) {
		var s seen
		defer func() { res <- s }()
		for {
			h, p, err := readFrame(conn)
			if err != nil {
				s.err = err
				return
			}
			s.frames = append(s.frames, h)
			if h.OpCode == ws.OpBinary && h.Length == 0 {
				break
			}
			s.data += string(p)
		}
		// The answer after the client's EOF, then the server's own EOF.
		writeFrame(conn, ws.OpBinary, true, []byte("answer"))
		writeFrame(conn, ws.OpBinary, true, nil)
		<-closeNow
		writeFrame(conn, ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
		_, s.close, s.err = readFrame(conn)
	})
	c := ts.dial(t)
	if !c.halfClose {
		t.Fatal("subprotocol not negotiated")
	}
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
	if _, err := c.Write([]byte("question")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("second CloseWrite: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrWriteClosed) {
		t.Errorf("Write after CloseWrite: %v, want ErrWriteClosed", err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "answer" {
		t.Fatalf("ReadAll = %q, %v; want answer then EOF", got, err)
	}
	if isClosed(c.Done()) {
		t.Fatal("Done closed by the marker: the stream is only half-closed")
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read after the marker = %d, %v; want io.EOF again", n, err)
	}
	// Nobody reads now: the close frame must still be seen and answered.
	close(closeNow)
	waitDone(t, c.Done(), "the close frame that followed the marker")
	s := <-res
	if s.err != nil {
		t.Fatalf("server: %v", s.err)
	}
	if s.data != "question" || len(s.frames) != 2 {
		t.Errorf("server got %q in %d frames, want question then the marker", s.data, len(s.frames))
	}
	if m := s.frames[len(s.frames)-1]; !m.Fin || !m.Masked || m.OpCode != ws.OpBinary || m.Length != 0 {
		t.Errorf("marker %+v", m)
	}
	if code, _ := ws.ParseCloseFrameData(s.close); code != ws.StatusNormalClosure {
		t.Errorf("close echo %v", s.close)
	}
}

// TestCloseWriteFallback: a server that selects no subprotocol (Azure's)
// knows no half-close, so CloseWrite closes, and an empty frame is no EOF.
func TestCloseWriteFallback(t *testing.T) {
	got := make(chan []ws.Header, 1)
	ts := startServer(t, true, func(conn net.Conn) {
		writeFrame(conn, ws.OpBinary, true, nil)
		writeFrame(conn, ws.OpBinary, true, []byte("data"))
		var hs []ws.Header
		defer func() { got <- hs }()
		for {
			h, p, err := readFrame(conn)
			if err != nil {
				return
			}
			hs = append(hs, h)
			if h.OpCode == ws.OpClose {
				writeFrame(conn, ws.OpClose, true, p)
				return
			}
		}
	})
	c := ts.dial(t)
	if c.halfClose {
		t.Fatal("subprotocol negotiated with a server that selected none")
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "data" {
		t.Fatalf("Read = %q, %v; an empty frame must not read as EOF", buf, err)
	}
	if isClosed(c.Done()) {
		t.Fatal("Done closed on an open stream")
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if !isClosed(c.Done()) {
		t.Error("Done open after CloseWrite fell back to Close")
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	hs := <-got
	if len(hs) != 1 || hs[0].OpCode != ws.OpClose {
		t.Errorf("server got %+v, want only a close frame", hs)
	}
}

// TestCloseAfterCloseWrite: Close after CloseWrite sends a normal close.
func TestCloseAfterCloseWrite(t *testing.T) {
	got := make(chan []ws.OpCode, 1)
	ts := startServerProto(t, false, true, func(conn net.Conn) {
		var ops []ws.OpCode
		defer func() { got <- ops }()
		for {
			h, _, err := readFrame(conn)
			if err != nil {
				return
			}
			ops = append(ops, h.OpCode)
			if h.OpCode == ws.OpClose {
				return
			}
		}
	})
	c := ts.dial(t)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if !isClosed(c.Done()) {
		t.Error("Done open after Close")
	}
	if err := c.CloseWrite(); err == nil {
		t.Error("CloseWrite after Close succeeded")
	}
	if ops := <-got; len(ops) != 2 || ops[0] != ws.OpBinary || ops[1] != ws.OpClose {
		t.Errorf("server got %v, want the marker then a close", ops)
	}
}

// TestAfterPeerMarker: after the peer's marker, pings are still answered
// with nobody reading, data still goes out, and a data frame from the peer
// breaks the protocol (1002) and ends the stream.
func TestAfterPeerMarker(t *testing.T) {
	type seen struct {
		pong, data, close string
		err               error
	}
	res := make(chan seen, 1)
	ts := startServerProto(t, true, true, func(conn net.Conn) {
		var s seen
		defer func() { res <- s }()
		writeFrame(conn, ws.OpBinary, true, nil)
		writeFrame(conn, ws.OpPing, true, []byte("hi"))
		// The pong and the client's data, in whichever order they come.
		for s.pong == "" || s.data == "" {
			h, p, err := readFrame(conn)
			if s.err = err; err != nil {
				return
			}
			if h.OpCode == ws.OpPong {
				s.pong = string(p)
			} else {
				s.data += string(p)
			}
		}
		writeFrame(conn, ws.OpBinary, true, []byte("not allowed"))
		h, p, err := readFrame(conn)
		if s.err = err; h.OpCode == ws.OpClose {
			s.close = string(p)
		}
	})
	c := ts.dial(t)
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("Read = %d, %v; want the marker's io.EOF", n, err)
	}
	if _, err := c.Write([]byte("still writing")); err != nil {
		t.Fatal(err)
	}
	waitDone(t, c.Done(), "a data frame after the marker")
	s := <-res
	if s.err != nil {
		t.Fatalf("server: %v", s.err)
	}
	if s.pong != "hi" || s.data != "still writing" {
		t.Errorf("server got pong %q, data %q", s.pong, s.data)
	}
	if code, _ := ws.ParseCloseFrameData([]byte(s.close)); code != ws.StatusProtocolError {
		t.Errorf("close %q, want 1002", s.close)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("Read after the marker = %v, want io.EOF", err)
	}
}

// TestDone: Done closes on a close frame read, on a dropped connection,
// and on Close, and not before.
func TestDone(t *testing.T) {
	t.Run("close frame", func(t *testing.T) {
		ts := startServerProto(t, true, true, func(conn net.Conn) {
			writeFrame(conn, ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
			readFrame(conn)
		})
		c := ts.dial(t)
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("Read: %v", err)
		}
		if !isClosed(c.Done()) {
			t.Error("Done open after a close frame")
		}
	})
	t.Run("drop", func(t *testing.T) {
		ts := startServerProto(t, true, true, func(conn net.Conn) {})
		c := ts.dial(t)
		io.Copy(io.Discard, c)
		if !isClosed(c.Done()) {
			t.Error("Done open after the connection ended")
		}
	})
	t.Run("Close", func(t *testing.T) {
		ts := startServerProto(t, true, true, func(conn net.Conn) { readFrame(conn) })
		c := ts.dial(t)
		if isClosed(c.Done()) {
			t.Fatal("Done closed on a fresh conn")
		}
		c.Close()
		if !isClosed(c.Done()) {
			t.Error("Done open after Close")
		}
	})
}
