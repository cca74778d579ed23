package wsconn

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// TestReadEnd: how each way a stream can end reaches Read. Only the
// peer's close frame 1000 (or one without a code) is io.EOF; every other
// end is a *CloseError with the code, after the data sent before it, and
// Err says the same once Done is closed.
func TestReadEnd(t *testing.T) {
	closeWith := func(code ws.StatusCode, reason string) func(net.Conn) {
		return func(conn net.Conn) {
			writeFrame(conn, ws.OpClose, true, ws.NewCloseFrameBody(code, reason))
			readFrame(conn) // the echo
		}
	}
	for _, tc := range []struct {
		name   string
		tls    bool
		end    func(net.Conn) // after the data frame
		code   int            // 0: a clean end, io.EOF
		reason string
		cause  error  // in the error's chain
		data   string // read before the end, when not "data"
	}{
		{name: "close 1000", end: closeWith(ws.StatusNormalClosure, "bye")},
		{name: "close without a code", end: func(conn net.Conn) {
			writeFrame(conn, ws.OpClose, true, nil)
			readFrame(conn)
		}},
		{name: "close 1001", end: closeWith(ws.StatusGoingAway, "hub shutting down"), code: 1001, reason: "hub shutting down"},
		{name: "close 1001 peer disconnected", end: closeWith(ws.StatusGoingAway, "peer disconnected"), code: 1001, reason: "peer disconnected"},
		{name: "close 1009", end: closeWith(ws.StatusMessageTooBig, "too big"), code: 1009, reason: "too big"},
		{name: "close 1011", end: closeWith(ws.StatusInternalServerError, ""), code: 1011},
		{name: "close 4000", end: closeWith(CodeReset, "target reset"), code: CodeReset, reason: "target reset"},
		{name: "drop between frames", end: func(net.Conn) {}, code: CodeAbnormal, cause: io.ErrUnexpectedEOF},
		{name: "drop between frames, TLS", tls: true, end: func(net.Conn) {}, code: CodeAbnormal},
		{name: "drop mid-frame", end: func(conn net.Conn) {
			conn.Write([]byte{0x82, 10, 'a', 'b', 'c'}) // 10 bytes announced, 3 sent
		}, code: CodeAbnormal, cause: io.ErrUnexpectedEOF, data: "dataabc"},
		{name: "drop mid-header", end: func(conn net.Conn) {
			conn.Write([]byte{0x82}) // one byte of a header
		}, code: CodeAbnormal, cause: io.ErrUnexpectedEOF},
		{name: "reset", end: func(conn net.Conn) {
			conn.(*net.TCPConn).SetLinger(0)
		}, code: CodeAbnormal, cause: syscall.ECONNRESET},
		{name: "protocol error", end: func(conn net.Conn) {
			writeFrame(conn, ws.OpCode(0x3), true, nil) // a reserved opcode
			readFrame(conn)
		}, code: 1002, reason: "reserved opcode 3", cause: ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServerProto(t, tc.tls, true, func(conn net.Conn) {
				writeFrame(conn, ws.OpBinary, true, []byte("data"))
				tc.end(conn)
			})
			c := ts.dial(t)
			got, err := io.ReadAll(c)
			want := "data"
			if tc.data != "" {
				want = tc.data
			}
			if string(got) != want {
				t.Errorf("read %q before the end, want %q", got, want)
			}
			waitDone(t, c.Done(), "the end")
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("ReadAll error %v, want io.EOF (a clean end)", err)
				}
				if e := c.Err(); e != nil {
					t.Errorf("Err = %v after a clean end", e)
				}
				return
			}
			if err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("ReadAll error %v, want a cut, not EOF", err)
			}
			var ce *CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("ReadAll error %v (%T), want a *CloseError", err, err)
			}
			if ce.Code != tc.code || ce.Reason != tc.reason {
				t.Errorf("CloseError code %d reason %q, want %d %q", ce.Code, ce.Reason, tc.code, tc.reason)
			}
			if !errors.Is(err, ErrStreamCut) {
				t.Errorf("%v is not ErrStreamCut", err)
			}
			if tc.cause != nil && !errors.Is(err, tc.cause) {
				t.Errorf("%v does not hold %v", err, tc.cause)
			}
			if !strings.HasPrefix(err.Error(), "stream cut") {
				t.Errorf("error %q does not say the stream was cut", err)
			}
			if e := c.Err(); e != err {
				t.Errorf("Err = %v, want Read's %v", e, err)
			}
			if n, again := c.Read(make([]byte, 1)); n != 0 || again != err {
				t.Errorf("Read again = %d, %v; want the same error", n, again)
			}
		})
	}
}

// TestErrAfterMarker: after the peer's end-of-stream marker Read says
// io.EOF whatever follows; Err tells whether the stream then ended
// cleanly, once Done is closed, with nobody reading.
func TestErrAfterMarker(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(net.Conn)
		code int // 0: clean
	}{
		{"close 1000", func(conn net.Conn) {
			writeFrame(conn, ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
			readFrame(conn)
		}, 0},
		{"close 1001", func(conn net.Conn) {
			writeFrame(conn, ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusGoingAway, "hub shutting down"))
			readFrame(conn)
		}, 1001},
		{"drop", func(net.Conn) {}, CodeAbnormal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := make(chan struct{})
			ts := startServerProto(t, true, true, func(conn net.Conn) {
				writeFrame(conn, ws.OpBinary, true, nil)
				<-next
				tc.end(conn)
			})
			c := ts.dial(t)
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("Read = %d, %v; want the marker's io.EOF", n, err)
			}
			if err := c.Err(); err != nil {
				t.Fatalf("Err = %v while the stream is half-closed", err)
			}
			close(next)
			waitDone(t, c.Done(), "the end after the marker")
			err := c.Err()
			if tc.code == 0 {
				if err != nil {
					t.Errorf("Err = %v after a clean end", err)
				}
				return
			}
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != tc.code {
				t.Errorf("Err = %v, want a *CloseError with code %d", err, tc.code)
			}
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("Read after the marker = %v, want io.EOF still", err)
			}
		})
	}
}

// TestAbort: Abort sends its code and reason after the data written
// before it; this end's own Read and Err then say so, and no cut is
// reported for its own doing.
func TestAbort(t *testing.T) {
	type seen struct {
		data  string
		close []byte
		err   error
	}
	res := make(chan seen, 1)
	ts := startServerProto(t, true, true, func(conn net.Conn) {
		var s seen
		defer func() { res <- s }()
		for {
			h, p, err := readFrame(conn)
			if s.err = err; err != nil {
				return
			}
			if h.OpCode == ws.OpClose {
				s.close = p
				return
			}
			s.data += string(p)
		}
	})
	c := ts.dial(t)
	if _, err := c.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	if err := c.Abort(CodeReset, "client → device: connection reset"); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	s := <-res
	if s.err != nil {
		t.Fatalf("server: %v", s.err)
	}
	if s.data != "partial" {
		t.Errorf("server got %q before the close frame", s.data)
	}
	code, reason := ws.ParseCloseFrameData(s.close)
	if code != CodeReset || reason != "client → device: connection reset" {
		t.Errorf("server got close %d %q, want %d and the reason", code, reason, CodeReset)
	}
	if err := <-readErr; err == nil || errors.Is(err, ErrStreamCut) {
		t.Errorf("Read blocked during Abort returned %v: want an error, and not a cut by the peer", err)
	}
	waitDone(t, c.Done(), "Abort")
	var ce *CloseError
	if err := c.Err(); !errors.As(err, &ce) || ce.Code != CodeReset {
		t.Errorf("Err after Abort = %v, want the code sent", err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after Abort succeeded")
	}
}

// TestAbortRefusesCodes: a code that may not be sent, or that means a
// clean end, is refused and the stream goes on; a long reason is cut to
// what a close frame holds, on a rune boundary.
func TestAbortRefusesCodes(t *testing.T) {
	closes := make(chan []byte, 1)
	ts := startServerProto(t, true, true, func(conn net.Conn) {
		for {
			h, p, err := readFrame(conn)
			if err != nil {
				return
			}
			if h.OpCode == ws.OpClose {
				closes <- p
				return
			}
			writeFrame(conn, ws.OpBinary, true, p)
		}
	})
	c := ts.dial(t)
	for _, code := range []int{0, 999, 1000, 1004, 1005, 1006, 1015, 2999, 5000} {
		if err := c.Abort(code, "x"); err == nil {
			t.Errorf("Abort(%d) accepted", code)
		}
	}
	if _, err := c.Write([]byte("still open")); err != nil {
		t.Fatalf("Write after refused Aborts: %v", err)
	}
	buf := make([]byte, len("still open"))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("Read after refused Aborts: %v", err)
	}
	long := strings.Repeat("é", 100) // 200 bytes
	if err := c.Abort(CodeGoingAway, long); err != nil {
		t.Fatal(err)
	}
	p := <-closes
	code, reason := ws.ParseCloseFrameData(p)
	if code != CodeGoingAway || len(p) > ws.MaxControlFramePayloadSize || !utf8.ValidString(reason) || !strings.HasPrefix(long, reason) || len(reason) < maxReason-1 {
		t.Errorf("close %d with a reason of %d bytes (valid UTF-8: %v), want 1001 and at most %d", code, len(reason), utf8.ValidString(reason), maxReason)
	}
}

// TestCloseIsNoCut: this end's Close ends the stream cleanly, whatever a
// Read blocked meanwhile saw.
func TestCloseIsNoCut(t *testing.T) {
	ts := startServerProto(t, true, true, func(conn net.Conn) {
		readFrame(conn)
	})
	c := ts.dial(t)
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	c.Close()
	if err := <-readErr; errors.Is(err, ErrStreamCut) {
		t.Errorf("Read blocked during Close returned %v, a cut", err)
	}
	if err := c.Err(); err != nil {
		t.Errorf("Err after Close = %v, want nil", err)
	}
}
