package relay

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/wsconn"
)

// pooledPair dials both sides of st through their pools and checks that
// bytes cross both ways.
func pooledPair(t *testing.T, h *testHub, st *Stream, svc, dev *wsconn.Pool) (s, d net.Conn) {
	t.Helper()
	ctx := context.Background()
	s, err := svc.Dial(ctx, h.url(st), st.ServiceToken, h.tls)
	if err != nil {
		t.Fatalf("service Dial: %v", err)
	}
	d, err = dev.Dial(ctx, h.url(st), st.DeviceToken, h.tls)
	if err != nil {
		t.Fatalf("device Dial: %v", err)
	}
	for _, dir := range [][2]net.Conn{{s, d}, {d, s}} {
		msg := []byte("hello over " + dir[0].LocalAddr().String())
		if _, err := dir[0].Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(dir[1], got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("read %q, %v; want %q", got, err, msg)
		}
	}
	return s, d
}

func newPool(t *testing.T) *wsconn.Pool {
	p := wsconn.NewPool()
	t.Cleanup(func() { p.Close() })
	return p
}

// endStream closes the service side and then, once it read the end, the
// device side, as the SDKs do, and waits for the relay to report it.
func endStream(t *testing.T, h *testHub, s, d net.Conn) Info {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("service Close: %v", err)
	}
	readWithin(t, d, 5*time.Second)
	if err := d.Close(); err != nil {
		t.Fatalf("device Close: %v", err)
	}
	return h.info(t)
}

// TestReuseCarriesNextStreams: with tether-stream.v2, the connections of a
// stream that ended cleanly carry the next streams, on both sides, and the
// bytes of each stream are its own.
func TestReuseCarriesNextStreams(t *testing.T) {
	h := newHub(t, Options{})
	svc, dev := newPool(t), newPool(t)
	var sAddr, dAddr string
	for i := range 3 {
		st := h.open(t, "dev1", 0)
		s, d := pooledPair(t, h, st, svc, dev)
		if i == 0 {
			sAddr, dAddr = s.LocalAddr().String(), d.LocalAddr().String()
		} else if s.LocalAddr().String() != sAddr || d.LocalAddr().String() != dAddr {
			t.Fatalf("stream %d: local addresses %v, %v; want the first stream's %s, %s",
				i, s.LocalAddr(), d.LocalAddr(), sAddr, dAddr)
		}
		info := endStream(t, h, s, d)
		if !info.PairedOK || info.ClosedBy != ClosedByService {
			t.Fatalf("stream %d: Info %+v", i, info)
		}
		if svc.Idle() != 1 || dev.Idle() != 1 {
			t.Fatalf("after stream %d: idle service %d, device %d; want 1 and 1", i, svc.Idle(), dev.Idle())
		}
	}
}

// TestReuseAfterHalfClose: a stream ended by both end-of-stream markers
// (the hub closes both sides) leaves both connections reusable too.
func TestReuseAfterHalfClose(t *testing.T) {
	h := newHub(t, Options{})
	svc, dev := newPool(t), newPool(t)
	st := h.open(t, "dev1", 0)
	s, d := pooledPair(t, h, st, svc, dev)
	sh, dh := mustHalf(t, s), mustHalf(t, d)
	if err := sh.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	readWithin(t, d, 5*time.Second)
	if err := dh.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	readWithin(t, s, 5*time.Second)
	waitClosed(t, sh.Done(), "service")
	waitClosed(t, dh.Done(), "device")
	s.Close()
	d.Close()
	if i := h.info(t); i.HalfClosedBy != ClosedByService {
		t.Fatalf("Info %+v", i)
	}
	if svc.Idle() != 1 || dev.Idle() != 1 {
		t.Fatalf("idle service %d, device %d; want 1 and 1", svc.Idle(), dev.Idle())
	}
	st = h.open(t, "dev1", 0)
	s, d = pooledPair(t, h, st, svc, dev)
	endStream(t, h, s, d)
}

// TestReuseDeadConnRetried: a pooled connection the hub closed while idle
// costs the next Dial nothing but a new connection: its request never got
// there, so the token still works.
func TestReuseDeadConnRetried(t *testing.T) {
	h := newHub(t, Options{})
	svc, dev := newPool(t), newPool(t)
	s, d := pooledPair(t, h, h.open(t, "dev1", 0), svc, dev)
	sAddr := s.LocalAddr().String()
	endStream(t, h, s, d)
	h.r.closeIdle()
	s, d = pooledPair(t, h, h.open(t, "dev1", 0), svc, dev)
	if s.LocalAddr().String() == sAddr {
		t.Fatalf("service side reused %s, which the hub closed", sAddr)
	}
	endStream(t, h, s, d)
}

// TestReuseBadTokenAnswered: a wrong token sent on a reused connection is
// answered 401 as on a new one, and that connection is closed, not reused.
func TestReuseBadTokenAnswered(t *testing.T) {
	h := newHub(t, Options{})
	svc, dev := newPool(t), newPool(t)
	s, d := pooledPair(t, h, h.open(t, "dev1", 0), svc, dev)
	endStream(t, h, s, d)
	st := h.open(t, "dev1", 0)
	_, err := svc.Dial(context.Background(), h.url(st), "WRONGTOKEN", h.tls)
	wantUnauthorized(t, err)
	if svc.Idle() != 0 {
		t.Fatalf("idle service conns %d after a refused request, want 0", svc.Idle())
	}
	// The stream is untouched by the failed attempt.
	s, d = pooledPair(t, h, st, svc, dev)
	endStream(t, h, s, d)
}

// TestReuseIdleConnGarbage: what is not a request on an idle connection
// closes it, and only it; a request for anything but a stream is answered
// as the streaming endpoint answers it and the connection is closed.
func TestReuseIdleConnGarbage(t *testing.T) {
	h := newHub(t, Options{})
	for _, tc := range []struct {
		name, send string
		status     int
	}{
		{"garbage", "\x00\x01\x02 not http\r\n\r\n", 0},
		{"oversized header", "GET / HTTP/1.1\r\nX: " + string(bytes.Repeat([]byte("a"), 8192)) + "\r\n\r\n", 0},
		{"plain GET", "GET /bridges/hub1/dev1/ssh/x HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusUnauthorized},
		{"other path", "GET /devices HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := idleRawConn(t, h)
			raw.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(raw, tc.send); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(raw)
			res, err := http.ReadResponse(br, nil)
			if tc.status == 0 {
				if err == nil {
					t.Fatalf("answered %s, want the conn closed", res.Status)
				}
				return
			}
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != tc.status {
				t.Fatalf("answered %s, want %d", res.Status, tc.status)
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Fatalf("after the answer: %q, %v; want the conn closed", rest, err)
			}
		})
	}
}

// idleRawConn runs one stream whose service side is a raw TLS conn speaking
// tether-stream.v2, and returns that conn once the hub holds it idle.
func idleRawConn(t *testing.T, h *testHub) net.Conn {
	t.Helper()
	st := h.open(t, "dev1", 0)
	conn, br, proto := rawDialProto(t, h, st, st.ServiceToken, SubprotocolReuse)
	if proto != SubprotocolReuse {
		t.Fatalf("hub selected %q", proto)
	}
	d := h.mustDial(t, st, st.DeviceToken)
	rawWrite(t, conn, ws.OpClose, true, []byte{0x03, 0xe8})
	if f := rawRead(t, br); f.op != ws.OpClose {
		t.Fatalf("got frame %+v, want the close echo", f)
	}
	readWithin(t, d, 5*time.Second)
	h.info(t)
	return conn
}
