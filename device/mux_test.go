package device

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/device/devicetest"
	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/wire"
)

// These tests run the device's data session against devicetest's hub
// stand-in, which speaks wire/mux.go over real TLS: a conformance test of
// the SDK's half of the protocol. The hub's own half is tested with the
// SDK end to end in e2e.

const muxToken = "bXV4LWJyaWRnZS10b2tlbg"

// muxSetup is a hub offering sessions, an echo bridge for the streams
// that come over MQTT, and a device connected over tr.
type muxSetup struct {
	hub    *devicetest.Hub
	bridge *devicetest.Bridge
	c      *Client
	logs   *syncBuffer
	rids   int
}

func startMux(t *testing.T, tr Transport, opt func(*Options)) *muxSetup {
	t.Helper()
	key := devicetest.NewKey()
	m := &muxSetup{hub: devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")}
	m.hub.OfferSessions()
	m.bridge = devicetest.StartBridge(t, muxToken, true)
	opts, logs := testOptions(t, m.hub, tr)
	if opt != nil {
		opt(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, m.hub.ConnStr(key), opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	m.c, m.logs = c, logs
	return m
}

// classic sends a stream request over MQTT marked $tmux=1 and accepts it
// the classic way: an answer over MQTT and the bridge joined, an echo
// through it.
func (m *muxSetup) classic(t *testing.T) {
	t.Helper()
	m.rids++
	rid := fmt.Sprintf("m%d", m.rids)
	url := "wss://" + m.bridge.Addr + wire.BridgePath("hub", devicetest.DeviceID, "ssh", "s-"+rid)
	m.hub.SendRequest(wire.StreamRequest{Name: "ssh", RID: rid, URL: url, Token: muxToken, Mux: true}.Topic())
	r := nextRequest(t, m.c)
	if r.URL != url || r.StreamID != "s-"+rid || r.pushed != nil {
		t.Fatalf("request over MQTT = %+v", r)
	}
	conn := accept(t, r)
	defer conn.Close()
	if got, want := m.hub.NextAnswer(), wire.ResponseTopic(200, rid); got != want {
		t.Fatalf("answer = %q, want %q", got, want)
	}
	echoOnce(t, conn, "classic "+rid)
}

// session sends the first $tmux=1 request and returns the session it
// opened, once the client holds it too.
func (m *muxSetup) session(t *testing.T) *devicetest.Session {
	t.Helper()
	m.classic(t)
	s := m.hub.NextSession()
	waitFor(t, "the client to hold its session", func() bool { open, _, _, _ := m.c.muxState(); return open })
	return s
}

func accept(t *testing.T, r *Request) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := r.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	return conn
}

func echoOnce(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

func push(t *testing.T, s *devicetest.Session, name, rid string, early ...byte) *devicetest.PushedStream {
	t.Helper()
	ps, err := s.Push(wire.MuxRequest{Name: name, RID: rid, StreamID: "id-" + rid}, early...)
	if err != nil {
		t.Fatalf("push %s: %v", rid, err)
	}
	return ps
}

func wantAnswer(t *testing.T, ps *devicetest.PushedStream, status int) {
	t.Helper()
	a, err := ps.Answer()
	if err != nil {
		t.Fatalf("reading the device's answer: %v", err)
	}
	if a != (wire.MuxAnswer{Status: status}) {
		t.Fatalf("answer = %+v, want status %d", a, status)
	}
}

// muxState is what the client knows of its session, for tests.
func (c *Client) muxState() (open, dialing, none bool, dials int) {
	c.mux.mu.Lock()
	defer c.mux.mu.Unlock()
	return c.mux.cur != nil, c.mux.dialing, c.mux.none, c.mux.dials
}

// The first $tmux=1 request is answered over MQTT and opens a session;
// the next streams come on it, answered there, their bytes in WebSocket
// frames, and no MQTT message and no second dial.
func TestSessionOpensAndCarriesStreams(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		m := startMux(t, tr, nil)
		s := m.session(t)
		if s.DeviceID != devicetest.DeviceID || s.ModuleID != "" {
			t.Fatalf("session of %q/%q", s.DeviceID, s.ModuleID)
		}

		ps := push(t, s, "ssh", "p1")
		r := nextRequest(t, m.c)
		if r.Name != "ssh" || r.RID != "p1" || r.StreamID != "id-p1" || r.URL != "" {
			t.Fatalf("pushed request = %+v", r)
		}
		conn := accept(t, r)
		wantAnswer(t, ps, 200)
		if err := ps.Send([]byte("to the device")); err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, len("to the device"))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != "to the device" {
			t.Fatalf("device read %q, %v", got, err)
		}
		if _, err := conn.Write([]byte("to the hub")); err != nil {
			t.Fatal(err)
		}
		if msg, err := ps.Recv(); err != nil || string(msg) != "to the hub" {
			t.Fatalf("hub read %q, %v", msg, err)
		}
		// The end-of-stream marker is the service's half-close.
		if _, err := ps.Write(devicetest.Frame(nil)); err != nil {
			t.Fatal(err)
		}
		if n, err := conn.Read(got); n != 0 || err != io.EOF {
			t.Fatalf("after the marker: %d, %v, want io.EOF", n, err)
		}
		conn.Close()
		if msg, err := ps.Recv(); err != io.EOF {
			t.Fatalf("after Close the hub read %q, %v, want io.EOF", msg, err)
		}

		// Another $tmux=1 request over MQTT (the hub had not seen the
		// session yet) is answered there, and dials nothing more.
		m.classic(t)
		if _, _, _, dials := m.c.muxState(); dials != 1 {
			t.Fatalf("%d dials, want 1", dials)
		}
		select {
		case a := <-m.hub.Answers:
			t.Fatalf("an MQTT answer for a stream on the session: %s", a)
		default:
		}
	})
}

// A session that a module opens goes to the module's path.
func TestSessionModule(t *testing.T) {
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	b.OfferSessions()
	opts, _ := testOptions(t, b, WebSocket)
	c, err := Dial(context.Background(), b.ConnStr(key)+";ModuleId=m 1", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b.SendRequest(wire.StreamRequest{Name: "ssh", RID: "r1", URL: "wss://127.0.0.1:1/x", Token: muxToken, Mux: true}.Topic())
	if err := nextRequest(t, c).Reject(); err != nil {
		t.Fatal(err)
	}
	s := b.NextSession()
	if s.DeviceID != devicetest.DeviceID || s.ModuleID != "m 1" {
		t.Fatalf("session of %q/%q", s.DeviceID, s.ModuleID)
	}
}

// 100 streams at once on one session, each echoed whole.
func TestSessionEcho100(t *testing.T) {
	m := startMux(t, WebSocket, nil)
	s := m.session(t)
	const n = 100
	var served sync.WaitGroup
	served.Add(1)
	go func() {
		defer served.Done()
		var wg sync.WaitGroup
		for range n {
			r, err := m.c.Accept(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			conn, err := r.Accept(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				io.Copy(conn, conn) // until the hub's close frame
			}()
		}
		wg.Wait()
	}()

	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echoPushed(s, i); err != nil {
				t.Errorf("stream %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	served.Wait()
	if _, _, _, dials := m.c.muxState(); dials != 1 {
		t.Fatalf("%d dials, want 1", dials)
	}
}

// echoPushed pushes stream i, sends 64 KiB in frames of varied sizes and
// reads them back, then ends the stream with a close frame.
func echoPushed(s *devicetest.Session, i int) error {
	ps, err := s.Push(wire.MuxRequest{Name: "echo", RID: fmt.Sprintf("e%d", i)})
	if err != nil {
		return err
	}
	defer ps.Close()
	if a, err := ps.Answer(); err != nil || a.Status != 200 {
		return fmt.Errorf("answer %+v, %v", a, err)
	}
	want := make([]byte, 64<<10)
	for j := range want {
		want[j] = byte(i + j*7)
	}
	errc := make(chan error, 1)
	go func() {
		for off, size := 0, 1; off < len(want); off, size = off+size, size*3%8191+1 {
			if err := ps.Send(want[off:min(off+size, len(want))]); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	var got []byte
	for len(got) < len(want) {
		msg, err := ps.Recv()
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", len(got), err)
		}
		got = append(got, msg...)
	}
	if err := <-errc; err != nil {
		return err
	}
	if string(got) != string(want) {
		return errors.New("echo differs")
	}
	ps.SetWriteDeadline(time.Now().Add(devicetest.Timeout))
	if _, err := ps.Write(ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))); err != nil {
		return err
	}
	if _, err := ps.Recv(); err != io.EOF {
		return fmt.Errorf("after the close frame: %v, want io.EOF", err)
	}
	return nil
}

// A reject is the device's status on the stream, then the stream's end;
// the service's early bytes behind the header are never read. An accepted
// stream's early bytes are its first.
func TestSessionRejectDropsEarlyData(t *testing.T) {
	m := startMux(t, WebSocket, nil)
	s := m.session(t)

	ps := push(t, s, "nope", "x1", devicetest.Frame([]byte("early bytes of a rejected stream"))...)
	if err := nextRequest(t, m.c).Reject(); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, ps, wire.AnswerNotAllowed)
	if rest, err := ps.RecvEOF(); err != nil || len(rest) != 0 {
		t.Fatalf("after the reject the hub read %q, %v; want the stream's end", rest, err)
	}

	ps = push(t, s, "web", "x2", devicetest.Frame([]byte("early"))...)
	if err := nextRequest(t, m.c).RejectUnreachable(syscall.ECONNREFUSED); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, ps, wire.AnswerTargetRefused)

	ps = push(t, s, "ssh", "x3", devicetest.Frame([]byte("first bytes"))...)
	r := nextRequest(t, m.c)
	conn := accept(t, r)
	defer conn.Close()
	wantAnswer(t, ps, 200)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len("first bytes"))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "first bytes" {
		t.Fatalf("accepted stream read %q, %v", got, err)
	}
	if err := r.Reject(); err == nil {
		t.Error("a second answer to one request succeeded")
	}
}

// A stream whose header is broken is reset alone: no request reaches
// Accept, and the session carries the next stream.
func TestSessionMalformedHeader(t *testing.T) {
	m := startMux(t, WebSocket, nil)
	s := m.session(t)
	long := binary.BigEndian.AppendUint16(nil, wire.MaxMuxHeader+1)
	long = append(long, make([]byte, wire.MaxMuxHeader+1)...)
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"empty header", []byte{0, 0}},
		{"too long", long},
		{"not JSON", []byte{0, 3, 'a', 'b', 'c'}},
		{"bad name", mustHeader(t, wire.MuxRequest{Name: "a/b", RID: "r"})},
		{"no rid", mustHeader(t, wire.MuxRequest{Name: "ssh"})},
	} {
		st, err := s.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(devicetest.Timeout))
		if _, err := st.Write(tc.raw); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got, err := io.ReadAll(st); !errors.Is(err, yamux.ErrConnectionReset) || len(got) != 0 {
			t.Fatalf("%s: the hub read %q, %v; want the stream reset without an answer", tc.name, got, err)
		}
		st.Close()
	}
	ps := push(t, s, "ssh", "ok")
	r := nextRequest(t, m.c)
	if r.RID != "ok" {
		t.Fatalf("request %+v, want rid ok: a malformed one reached Accept", r)
	}
	conn := accept(t, r)
	defer conn.Close()
	wantAnswer(t, ps, 200)
	if !strings.Contains(m.logs.String(), "malformed stream request") {
		t.Errorf("no warning logged:\n%s", m.logs)
	}
}

func mustHeader(t *testing.T, v any) []byte {
	b, err := wire.AppendMuxHeader(nil, v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The device closes its session after the idle time without a stream,
// not while one is open, and the next $tmux=1 request opens a new one.
func TestSessionIdleClose(t *testing.T) {
	const idle = 300 * time.Millisecond
	m := startMux(t, WebSocket, func(o *Options) { o.sessionIdle = idle })
	s := m.session(t)
	ps := push(t, s, "ssh", "i1")
	conn := accept(t, nextRequest(t, m.c))
	wantAnswer(t, ps, 200)
	select {
	case <-s.CloseChan():
		t.Fatal("the session closed while a stream was open")
	case <-time.After(3 * idle):
	}
	ended := time.Now()
	conn.Close()
	select {
	case <-s.CloseChan():
	case <-time.After(devicetest.Timeout):
		t.Fatal("the idle session stayed open")
	}
	if d := time.Since(ended); d < idle {
		t.Fatalf("closed %v after its last stream, before the idle time %v", d, idle)
	}
	waitFor(t, "the client to forget its session", func() bool { open, _, _, _ := m.c.muxState(); return !open })
	s2 := m.session(t)
	ps = push(t, s2, "ssh", "i2")
	accept(t, nextRequest(t, m.c)).Close()
	wantAnswer(t, ps, 200)
}

// A session that dies is forgotten; the next $tmux=1 request dials again.
// Losing the control channel closes the session.
func TestSessionDeathRedial(t *testing.T) {
	m := startMux(t, WebSocket, nil)
	s := m.session(t)
	s.Close()
	waitFor(t, "the client to forget its session", func() bool { open, _, _, _ := m.c.muxState(); return !open })
	s = m.session(t)
	if _, _, _, dials := m.c.muxState(); dials != 2 {
		t.Fatalf("%d dials, want 2", dials)
	}

	m.hub.NextConnect()
	m.hub.DropDevice(devicetest.DeviceID)
	select {
	case <-s.CloseChan():
	case <-time.After(devicetest.Timeout):
		t.Fatal("the session outlived the control channel")
	}
	waitFor(t, "the client to reconnect", m.c.Connected)
	waitFor(t, "the client to forget its session", func() bool { open, _, _, _ := m.c.muxState(); return !open })
	s = m.session(t)
	ps := push(t, s, "ssh", "d1")
	accept(t, nextRequest(t, m.c)).Close()
	wantAnswer(t, ps, 200)
}

// With NoSessions a $tmux=1 request is answered as any other, and no
// session is dialed.
func TestSessionOff(t *testing.T) {
	m := startMux(t, WebSocket, func(o *Options) { o.NoSessions = true })
	m.classic(t)
	m.classic(t)
	if _, _, _, dials := m.c.muxState(); dials != 0 || m.hub.SessionDials() != 0 {
		t.Fatalf("%d dials (the hub saw %d), want none", dials, m.hub.SessionDials())
	}
}

// A hub without sessions is asked once in the client's life.
func TestSessionHubWithout(t *testing.T) {
	m := startMux(t, WebSocket, nil)
	m.hub.RefuseSessions(404)
	m.classic(t)
	waitFor(t, "the dial to end", func() bool { _, dialing, none, _ := m.c.muxState(); return none && !dialing })
	m.classic(t)
	m.classic(t)
	if _, _, _, dials := m.c.muxState(); dials != 1 || m.hub.SessionDials() != 1 {
		t.Fatalf("%d dials (the hub saw %d), want 1", dials, m.hub.SessionDials())
	}
	if !strings.Contains(m.logs.String(), "does not offer sessions") {
		t.Errorf("not logged:\n%s", m.logs)
	}
}

// A failed dial waits its backoff and is tried again at a later request.
func TestSessionDialFailureRetries(t *testing.T) {
	m := startMux(t, WebSocket, func(o *Options) { o.MinBackoff, o.MaxBackoff = time.Hour, time.Hour })
	m.hub.RefuseSessions(503)
	m.classic(t)
	waitFor(t, "the dial to fail", func() bool { _, dialing, _, dials := m.c.muxState(); return dials == 1 && !dialing })
	m.c.mux.mu.Lock()
	retryAt := m.c.mux.retryAt
	m.c.mux.mu.Unlock()
	if !retryAt.After(time.Now()) {
		t.Fatalf("retry at %v: no backoff after a failed dial", retryAt)
	}
	m.classic(t)
	if _, _, _, dials := m.c.muxState(); dials != 1 {
		t.Fatalf("%d dials within the backoff, want 1", dials)
	}
	m.hub.OfferSessions()
	m.c.mux.mu.Lock()
	m.c.mux.retryAt = time.Time{} // the backoff's end
	m.c.mux.mu.Unlock()
	s := m.session(t)
	ps := push(t, s, "ssh", "f1")
	accept(t, nextRequest(t, m.c)).Close()
	wantAnswer(t, ps, 200)
	m.c.mux.mu.Lock()
	failures := m.c.mux.failures
	m.c.mux.mu.Unlock()
	if failures != 0 {
		t.Errorf("failures = %d after a session opened, want 0", failures)
	}
}

// Close rejects the streams on the session that nobody accepted.
func TestSessionCloseRejectsQueued(t *testing.T) {
	m := startMux(t, WebSocket, nil)
	s := m.session(t)
	ps := push(t, s, "ssh", "q1", devicetest.Frame([]byte("early"))...)
	waitFor(t, "the request to be queued", func() bool { return len(m.c.requests) == 1 })
	m.c.Close()
	wantAnswer(t, ps, wire.AnswerNotAllowed)
	select {
	case <-s.CloseChan():
	case <-time.After(devicetest.Timeout):
		t.Fatal("the session outlived Close")
	}
}

// The session goes to the HTTPS address of the node the control channel
// reached.
func TestSessionTarget(t *testing.T) {
	for _, tc := range []struct {
		name, hostName, module string
		tr                     Transport
		addr                   string
		hubs                   bool
		want                   string
	}{
		{"ws", "hub.example:8443", "", WebSocket, "wss://hub.example:8443" + wire.PathMQTTWebSocket, false, "wss://hub.example:8443/$tether/mux/devices/dev1"},
		{"ws, default port", "hub.example", "", WebSocket, "wss://hub.example" + wire.PathMQTTWebSocket, false, "wss://hub.example/$tether/mux/devices/dev1"},
		{"ws, a node of hubs", "hub.example", "", WebSocket, "wss://10.0.0.2:9443" + wire.PathMQTTWebSocket, true, "wss://10.0.0.2:9443/$tether/mux/devices/dev1"},
		{"tls", "hub.example:8443", "", TLS, "mqtt.example:8883", false, "wss://hub.example:8443/$tether/mux/devices/dev1"},
		{"tls, a node of hubs", "hub.example", "", TLS, "[::1]:8883", true, "wss://[::1]:443/$tether/mux/devices/dev1"},
		{"module", "hub.example", "m/1", WebSocket, "wss://hub.example" + wire.PathMQTTWebSocket, false, "wss://hub.example/$tether/mux/devices/dev1/modules/m%2F1"},
	} {
		c := &Client{transport: tc.tr, addr: tc.addr}
		c.cs.HostName, c.cs.DeviceID, c.cs.ModuleID = tc.hostName, "dev1", tc.module
		if tc.hubs {
			c.hubs = []hubTarget{{addr: tc.addr}}
		}
		if got, _ := c.sessionTarget(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
