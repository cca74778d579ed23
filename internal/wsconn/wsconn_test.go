package wsconn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	"github.com/tether-io/tether/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "TOKEN234567"

// testServer is a WebSocket server whose handler is the test's own,
// reached through the same handshake Dial performs.
type testServer struct {
	url  string
	tls  *tls.Config
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn []net.Conn
}

func startServer(t *testing.T, useTLS bool, serve func(conn net.Conn)) *testServer {
	t.Helper()
	return startServerProto(t, useTLS, false, serve)
}

// startServerProto starts a testServer that selects Subprotocol when
// selectProto is set and the client offers it, as Tether's hub does.
func startServerProto(t *testing.T, useTLS, selectProto bool, serve func(conn net.Conn)) *testServer {
	t.Helper()
	ts := &testServer{}
	var up ws.HTTPUpgrader
	if selectProto {
		up.Protocol = func(p string) bool { return p == Subprotocol }
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/reject":
			w.Header().Set(wire.HeaderErrorCode, wire.CodeName(wire.CodeUnauthorized))
			w.WriteHeader(http.StatusUnauthorized)
			w.Write(wire.EncodeError(wire.CodeUnauthorized, "go away"))
			return
		case "/plain":
			http.Error(w, "no such thing", http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if got := r.Header.Get("Sec-WebSocket-Protocol"); got != Subprotocol {
			t.Errorf("client offered subprotocols %q, want %q", got, Subprotocol)
		}
		conn, _, _, err := up.Upgrade(r, w)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		ts.mu.Lock()
		ts.conn = append(ts.conn, conn)
		ts.wg.Add(1)
		ts.mu.Unlock()
		defer ts.wg.Done()
		defer conn.Close()
		serve(conn)
	})
	srv := httptest.NewUnstartedServer(h)
	scheme := "ws://"
	if useTLS {
		srv.StartTLS()
		scheme = "wss://"
		ts.tls = srv.Client().Transport.(*http.Transport).TLSClientConfig
	} else {
		srv.Start()
	}
	ts.url = scheme + srv.Listener.Addr().String() + "/bridges/h/dev/ssh/ID"
	t.Cleanup(func() {
		srv.Close()
		ts.mu.Lock()
		for _, c := range ts.conn {
			c.Close()
		}
		ts.mu.Unlock()
		ts.wg.Wait()
	})
	return ts
}

func (ts *testServer) dial(t *testing.T) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), ts.url, testToken, ts.tls)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*Conn)
}

// readFrame reads one client frame and unmasks it.
func readFrame(r io.Reader) (ws.Header, []byte, error) {
	h, err := ws.ReadHeader(r)
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		return h, nil, err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	return h, p, nil
}

func writeFrame(w io.Writer, op ws.OpCode, fin bool, p []byte) error {
	return ws.WriteFrame(w, ws.Frame{Header: ws.Header{OpCode: op, Fin: fin, Length: int64(len(p))}, Payload: p})
}

// echo sends every data frame back as it came; it checks what wsconn
// promises about its frames on the way.
func echo(t *testing.T) func(net.Conn) {
	return func(conn net.Conn) {
		for {
			h, p, err := readFrame(conn)
			if err != nil {
				return
			}
			if h.OpCode == ws.OpClose {
				writeFrame(conn, ws.OpClose, true, p)
				return
			}
			if !h.Masked || h.OpCode != ws.OpBinary || !h.Fin {
				t.Errorf("client frame %+v: want masked binary FIN", h)
			}
			if total := int64(ws.HeaderSize(h)) + h.Length; total > maxFrame {
				t.Errorf("client frame of %d bytes, more than %d", total, maxFrame)
			}
			if err := writeFrame(conn, ws.OpBinary, true, p); err != nil {
				return
			}
		}
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestEcho(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "ws"
		if useTLS {
			name = "wss"
		}
		t.Run(name, func(t *testing.T) {
			ts := startServer(t, useTLS, echo(t))
			c := ts.dial(t)
			if c.LocalAddr().String() == c.RemoteAddr().String() || c.RemoteAddr().String() == "" {
				t.Errorf("addrs %v %v", c.LocalAddr(), c.RemoteAddr())
			}
			var want bytes.Buffer
			sizes := []int{1, 125, 126, 65535, 65536, maxChunk, maxChunk + 1, 3 << 20}
			for _, n := range sizes {
				want.Write(randBytes(n))
			}
			errc := make(chan error, 1)
			go func() { // concurrent with the reads below
				b := want.Bytes()
				for _, n := range sizes {
					if _, err := c.Write(b[:n]); err != nil {
						errc <- err
						return
					}
					b = b[n:]
				}
				errc <- nil
			}()
			got := make([]byte, want.Len())
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatal("echo differs")
			}
		})
	}
}

func TestReadFrom(t *testing.T) {
	ts := startServer(t, true, echo(t))
	c := ts.dial(t)
	want := randBytes(2<<20 + 17)
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, bytes.NewReader(want))
		errc <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("copy: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echo differs")
	}
}

// TestReadFrames checks that Read passes every data opcode, fragments and
// empty frames through, answers a ping and stops at a close frame.
func TestReadFrames(t *testing.T) {
	type result struct {
		pong, close []byte
		err         error
	}
	res := make(chan result, 1)
	ts := startServer(t, false, func(conn net.Conn) {
		var r result
		defer func() { res <- r }()
		writeFrame(conn, ws.OpText, true, []byte("ab"))
		writeFrame(conn, ws.OpBinary, false, []byte("cd"))
		writeFrame(conn, ws.OpPing, true, []byte("ping!"))
		writeFrame(conn, ws.OpContinuation, false, nil)
		writeFrame(conn, ws.OpContinuation, true, []byte("ef"))
		writeFrame(conn, ws.OpPong, true, []byte("unsolicited"))
		writeFrame(conn, ws.OpBinary, true, nil)
		writeFrame(conn, ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))
		h, p, err := readFrame(conn)
		if r.err = err; err != nil || h.OpCode != ws.OpPong {
			return
		}
		r.pong = p
		h, p, r.err = readFrame(conn)
		if h.OpCode == ws.OpClose {
			r.close = p
		}
	})
	c := ts.dial(t)
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if string(got) != "abcdef" {
		t.Errorf("read %q, want abcdef", got)
	}
	r := <-res
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if string(r.pong) != "ping!" {
		t.Errorf("pong %q", r.pong)
	}
	if code, _ := ws.ParseCloseFrameData(r.close); code != ws.StatusNormalClosure {
		t.Errorf("close echo code %d", code)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read after close = %d, %v; want io.EOF", n, err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after a close frame succeeded")
	}
}

func TestHandshakeError(t *testing.T) {
	ts := startServer(t, true, echo(t))
	base := strings.TrimSuffix(ts.url, "/bridges/h/dev/ssh/ID")
	tests := []struct {
		name   string
		url    string
		token  string
		status int
		code   int
		msg    string
	}{
		{
			name:   "azure body",
			url:    base + "/reject",
			token:  testToken,
			status: http.StatusUnauthorized,
			code:   wire.CodeUnauthorized,
			msg:    "go away",
		},
		{
			name:   "plain body",
			url:    base + "/plain",
			token:  testToken,
			status: http.StatusNotFound,
			msg:    "no such thing",
		},
		{
			name:   "empty body",
			url:    ts.url,
			token:  "wrong",
			status: http.StatusForbidden,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Dial(context.Background(), tt.url, tt.token, ts.tls)
			var he *HandshakeError
			if !errors.As(err, &he) {
				t.Fatalf("Dial error %v (%T), want *HandshakeError", err, err)
			}
			if he.StatusCode != tt.status || he.Code != tt.code || he.Message != tt.msg {
				t.Errorf(
					"got %+v, want status %d code %d message %q",
					he, tt.status, tt.code, tt.msg,
				)
			}
		})
	}
}

func TestBadToken(t *testing.T) {
	for _, tok := range []string{"", "a\r\nX-Evil: 1", "a b"} {
		if _, err := Dial(context.Background(), "ws://127.0.0.1:1/", tok, nil); !errors.Is(err, ErrBadToken) {
			t.Errorf("token %q: err %v, want ErrBadToken", tok, err)
		}
	}
}

// TestDialContext checks that ctx bounds a handshake the server never
// answers.
func TestDialContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	defer func() {
		ln.Close()
		for c := range accepted {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, "wss://"+ln.Addr().String()+"/bridges/h/d/s/i", testToken, &tls.Config{InsecureSkipVerify: true})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial error %v, want context.DeadlineExceeded", err)
	}
}

func TestClose(t *testing.T) {
	closed := make(chan []byte, 1)
	ts := startServer(t, true, func(conn net.Conn) {
		for {
			h, p, err := readFrame(conn)
			if err != nil {
				close(closed)
				return
			}
			if h.OpCode == ws.OpClose {
				closed <- p
				return
			}
		}
	})
	c := ts.dial(t)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	p, ok := <-closed
	if code, _ := ws.ParseCloseFrameData(p); !ok || code != ws.StatusNormalClosure {
		t.Errorf("server got close %v (ok %v), want 1000", p, ok)
	}
	if err := <-readErr; err == nil {
		t.Error("blocked Read returned no error after Close")
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

// TestReadDeadline checks that a read deadline interrupts Read without
// losing stream state, and that Read works again once it is lifted.
func TestReadDeadline(t *testing.T) {
	send := make(chan struct{})
	ts := startServer(t, true, func(conn net.Conn) {
		<-send
		writeFrame(conn, ws.OpBinary, true, []byte("late"))
		readFrame(conn) // until the client closes
	})
	c := ts.dial(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 4))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read error %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	close(send)
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "late" {
		t.Fatalf("Read = %q, %v", got, err)
	}
}

// TestResumableHeader feeds a frame one byte per read with timeouts in
// between, as a deadline firing mid-header would.
func TestResumableHeader(t *testing.T) {
	var frame bytes.Buffer
	payload := randBytes(300)
	writeFrame(&frame, ws.OpBinary, true, payload)
	c := &Conn{r: bufio.NewReaderSize(&stutterReader{b: frame.Bytes()}, 16)}
	var got []byte
	buf := make([]byte, 64)
	for len(got) < len(payload) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil && !isTimeout(err) {
			t.Fatalf("Read: %v", err)
		}
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("payload differs")
	}
}

// stutterReader returns one byte, then a timeout, and so on.
type stutterReader struct {
	b    []byte
	tick bool
}

func (s *stutterReader) Read(p []byte) (int, error) {
	s.tick = !s.tick
	if !s.tick {
		return 0, timeoutErr{}
	}
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	p[0] = s.b[0]
	s.b = s.b[1:]
	return 1, nil
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

func TestNoAllocs(t *testing.T) {
	w := newConn(discardConn{}, bufio.NewReader(strings.NewReader("")), nil, nil)
	msg := randBytes(64 << 10)
	w.Write(msg) // first use allocates the frame buffer
	if n := testing.AllocsPerRun(100, func() { w.Write(msg) }); n != 0 {
		t.Errorf("Write: %v allocations per call", n)
	}

	const frames = 101
	var stream bytes.Buffer
	for range frames {
		writeFrame(&stream, ws.OpBinary, true, msg)
	}
	r := &Conn{r: bufio.NewReader(bytes.NewReader(stream.Bytes()))}
	buf := make([]byte, len(msg))
	if n := testing.AllocsPerRun(frames-1, func() { io.ReadFull(r, buf) }); n != 0 {
		t.Errorf("Read: %v allocations per frame", n)
	}
}

// countWrites counts the Write calls it gets.
type countWrites struct {
	bytes.Buffer
	writes int
}

func (c *countWrites) Write(p []byte) (int, error) {
	c.writes++
	return c.Buffer.Write(p)
}

// TestWriteToOneWritePerFrame: io.Copy from a stream hands each frame's
// payload to the local writer in one Write, however many TLS records
// carried it.
func TestWriteToOneWritePerFrame(t *testing.T) {
	frames := [][]byte{randBytes(200 << 10), randBytes(10), randBytes(256 << 10), randBytes(70 << 10)}
	ts := startServer(t, true, func(conn net.Conn) {
		for _, f := range frames {
			writeFrame(conn, ws.OpBinary, true, f)
		}
		writeFrame(conn, ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	})
	c := ts.dial(t)
	var out countWrites
	n, err := io.Copy(&out, c)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Join(frames, nil)
	if n != int64(len(want)) || !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("copied %d bytes, want %d, equal %v", n, len(want), bytes.Equal(out.Bytes(), want))
	}
	if out.writes != len(frames) {
		t.Fatalf("%d writes for %d frames", out.writes, len(frames))
	}
}
