package service

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-io/tether/internal/muxconn"
	"github.com/tether-io/tether/internal/wsframe"
	"github.com/tether-io/tether/internal/wstest"
	"github.com/tether-io/tether/internal/yamux"
	"github.com/tether-io/tether/wire"
)

// These tests play the hub's side of a session by script, on fakeHub's
// session path: what a real hub does not do on demand (never answer, lose
// the session before the answer, send GoAway) and the exact bytes of the
// protocol. session_hub_test.go runs the same paths against a real hub.

// frameConn is a server's side of a session's WebSocket: binary frames
// whose payloads are the session's bytes.
type frameConn struct {
	net.Conn
	br   *bufio.Reader
	left int64
	mask [4]byte
	off  int
	wmu  sync.Mutex
}

func (c *frameConn) Read(p []byte) (int, error) {
	for c.left == 0 {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return 0, err
		}
		if h.OpCode == ws.OpClose {
			return 0, io.EOF
		}
		if h.OpCode.IsControl() {
			if _, err := io.CopyN(io.Discard, c.br, h.Length); err != nil {
				return 0, err
			}
			continue
		}
		c.left, c.mask, c.off = h.Length, h.Mask, 0
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	ws.Cipher(p[:n], c.mask, c.off)
	c.off += n
	c.left -= int64(n)
	return n, err
}

func (c *frameConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := ws.WriteHeader(c.Conn, ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(len(p))}); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// muxHub is fakeHub's session path played by a script: each stream's
// MuxOpen is read and the stream handed to serve.
type muxHub struct {
	f *fakeHub

	mu       sync.Mutex
	sessions []*yamux.Session
	serve    func(*hubStream)
	auth     []string // the Authorization of each session's upgrade
}

// hubStream is one stream of a muxHub's session, its MuxOpen read.
type hubStream struct {
	*yamux.Stream
	open wire.MuxOpen
	sess *yamux.Session
}

func newMuxHub(t *testing.T, f *fakeHub, serve func(*hubStream)) *muxHub {
	h := &muxHub{f: f, serve: serve}
	f.mu.Lock()
	f.mux = h.handle
	f.mu.Unlock()
	t.Cleanup(h.closeAll)
	return h
}

func (h *muxHub) handle(w http.ResponseWriter, r *http.Request) {
	up := ws.HTTPUpgrader{Protocol: func(p string) bool { return p == wire.SubprotocolMux }}
	conn, rw, _, err := up.Upgrade(r, w)
	if err != nil {
		return
	}
	sess, err := yamux.Server(&frameConn{Conn: conn, br: rw.Reader}, muxconn.Config())
	if err != nil {
		conn.Close()
		return
	}
	h.mu.Lock()
	h.sessions = append(h.sessions, sess)
	h.auth = append(h.auth, r.Header.Get("Authorization"))
	h.mu.Unlock()
	go func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				hs := &hubStream{Stream: st, sess: sess}
				if err := wire.ReadMuxHeader(st, &hs.open); err != nil {
					st.Close()
					return
				}
				h.mu.Lock()
				serve := h.serve
				h.mu.Unlock()
				serve(hs)
			}()
		}
	}()
}

func (h *muxHub) session(i int) *yamux.Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[i]
}

func (h *muxHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

func (h *muxHub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.sessions {
		s.Close()
	}
}

func (s *hubStream) answer(a wire.MuxAnswer) error { return wire.WriteMuxHeader(s, a) }

func (s *hubStream) accept() error {
	return s.answer(wire.MuxAnswer{Status: 200, Accepted: true, StreamID: "s-1"})
}

// frame reads one of the service's frames, unmasked.
func (s *hubStream) frame() (ws.Header, []byte, error) {
	f, err := wstest.ReadFrame(s, 1<<20)
	if err != nil {
		return f.Header, nil, err
	}
	if f.Header.Masked {
		ws.Cipher(f.Payload, f.Header.Mask, 0)
	}
	return f.Header, f.Payload, nil
}

func (s *hubStream) send(op ws.OpCode, p []byte) error {
	return ws.WriteFrame(s, ws.NewFrame(op, true, p))
}

// echo plays a device that sends back every byte and every end: the
// marker for the marker, a close frame for a close frame.
func (s *hubStream) echo() {
	defer s.Close()
	for {
		h, p, err := s.frame()
		if err != nil {
			return
		}
		switch h.OpCode {
		case ws.OpClose:
			s.send(ws.OpClose, p)
			return
		case ws.OpBinary, ws.OpText, ws.OpContinuation:
			if s.send(ws.OpBinary, p) != nil {
				return
			}
		}
	}
}

func acceptEcho(s *hubStream) {
	if s.accept() == nil {
		s.echo()
	}
}

// echoOnce writes msg on conn, half-closes it, and checks that msg and
// then EOF come back.
func echoOnce(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != msg {
		t.Fatalf("read %q, %v; want %q then EOF", got, err, msg)
	}
}

// echoMany opens n streams to deviceID at once and echoes a message on
// each.
func echoMany(t *testing.T, c *Client, deviceID string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := c.OpenStream(context.Background(), deviceID, "echo")
			if err != nil {
				t.Errorf("stream %d: %v", i, err)
				return
			}
			defer conn.Close()
			echoOnce(t, conn, fmt.Sprintf("hello %d", i))
		}()
	}
	wg.Wait()
}

// openEcho opens a stream named echo to dev1.
func openEcho(t *testing.T, c *Client) net.Conn {
	t.Helper()
	conn, err := c.OpenStream(context.Background(), "dev1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// echoStream opens a stream to dev1 and echoes msg on it.
func echoStream(t *testing.T, c *Client, msg string) {
	t.Helper()
	conn := openEcho(t, c)
	defer conn.Close()
	echoOnce(t, conn, msg)
}

// Streams share one session: its upgrade carries the policy's token, each
// stream's header the POST's content, and each stream is a stream Conn
// with half-close.
func TestSessionStreams(t *testing.T) {
	f := newFakeHub(t)
	opens := make(chan wire.MuxOpen, 1)
	h := newMuxHub(t, f, func(s *hubStream) {
		select {
		case opens <- s.open:
		default:
		}
		acceptEcho(s)
	})
	c := f.client(t, Options{ConnectTimeout: 1500 * time.Millisecond, ResponseTimeout: 30 * time.Second})
	echoMany(t, c, "dev 1", 100)
	if h.count() != 1 {
		t.Errorf("%d sessions, want 1", h.count())
	}
	f.mu.Lock()
	reqs := len(f.reqs)
	f.mu.Unlock()
	if reqs != 0 {
		t.Errorf("%d requests besides the session", reqs)
	}
	want := wire.MuxOpen{DeviceID: "dev 1", Name: "echo", ConnectTimeoutMs: 1500, ResponseTimeoutMs: 30000, UserAgent: userAgent}
	if got := <-opens; got != want {
		t.Errorf("MuxOpen %+v, want %+v", got, want)
	}
	h.mu.Lock()
	auth := h.auth[0]
	h.mu.Unlock()
	checkToken(t, auth, f.host)
}

// The hub's answers give exactly the errors of the POST's.
func TestSessionAnswers(t *testing.T) {
	cases := []struct {
		a    wire.MuxAnswer
		want []error
	}{
		{wire.MuxAnswer{Status: 200, DeviceStatus: 400}, []error{ErrRejected, ErrNotAllowed}},
		{wire.MuxAnswer{Status: 200, DeviceStatus: 503}, []error{ErrRejected, ErrTargetUnreachable}},
		{wire.MuxAnswer{Status: 200}, []error{ErrRejected}},
		{wire.MuxAnswer{Status: 404, ErrorCode: "DeviceNotOnline", Message: "Device dev1 is not online."}, []error{ErrDeviceOffline}},
		{wire.MuxAnswer{Status: 404, ErrorCode: "DeviceNotFound"}, []error{ErrDeviceNotFound}},
		{wire.MuxAnswer{Status: 504, ErrorCode: "GatewayTimeout"}, []error{ErrTimeout}},
		{wire.MuxAnswer{Status: 401}, []error{ErrUnauthorized}},
		{wire.MuxAnswer{Status: 429, ErrorCode: "ThrottlingException"}, []error{ErrThrottled}},
	}
	sentinels := []error{ErrDeviceNotFound, ErrDeviceOffline, ErrRejected, ErrTimeout, ErrUnauthorized, ErrThrottled, ErrNotAllowed, ErrTargetUnreachable}
	f := newFakeHub(t)
	var answer wire.MuxAnswer
	var mu sync.Mutex
	newMuxHub(t, f, func(s *hubStream) {
		mu.Lock()
		a := answer
		mu.Unlock()
		s.answer(a)
		s.Close()
	})
	c := f.client(t, Options{})
	for _, tc := range cases {
		mu.Lock()
		answer = tc.a
		mu.Unlock()
		_, err := c.OpenStream(context.Background(), "dev1", "ssh")
		if err == nil || !strings.Contains(err.Error(), `stream "ssh" to device "dev1"`) {
			t.Fatalf("%+v: err = %v", tc.a, err)
		}
		for _, s := range sentinels {
			want := false
			for _, w := range tc.want {
				want = want || w == s
			}
			if errors.Is(err, s) != want {
				t.Errorf("%+v: errors.Is(%v, %v) = %v", tc.a, err, s, !want)
			}
		}
		var re *RejectError
		if errors.As(err, &re) && re.Status != tc.a.DeviceStatus {
			t.Errorf("%+v: RejectError status %d", tc.a, re.Status)
		}
		var ae *APIError
		if tc.a.Status != 200 && (!errors.As(err, &ae) || ae.StatusCode != tc.a.Status) {
			t.Errorf("%+v: err %v, want an APIError with status %d", tc.a, err, tc.a.Status)
		}
		if tc.a.Message != "" && !strings.Contains(err.Error(), tc.a.Message) {
			t.Errorf("%+v: %q lacks the hub's message", tc.a, err)
		}
	}
}

// Early data leaves behind the header before the answer; a rejection
// fails every call with the rejection, and Unsent gives back what was
// written.
func TestStartStreamRejected(t *testing.T) {
	f := newFakeHub(t)
	got := make(chan []byte, 1)
	newMuxHub(t, f, func(s *hubStream) {
		defer s.Close()
		var b []byte
		for len(b) < len("hello world") {
			_, p, err := s.frame()
			if err != nil {
				break
			}
			b = append(b, p...)
		}
		got <- b
		s.answer(wire.MuxAnswer{Status: 200, DeviceStatus: 400})
	})
	c := f.client(t, Options{})
	st, err := c.StartStream(context.Background(), "dev1", "ssh")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, w := range []string{"hello", " world"} {
		if _, err := st.Write([]byte(w)); err != nil {
			t.Fatalf("write before the answer: %v", err)
		}
	}
	if b := <-got; string(b) != "hello world" {
		t.Errorf("the hub read %q before answering, want the early data", b)
	}
	err = st.Accepted(context.Background())
	var re *RejectError
	if !errors.As(err, &re) || re.Status != 400 || !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("Accepted = %v, want the rejection", err)
	}
	if _, rerr := st.Read(make([]byte, 1)); rerr != err {
		t.Errorf("Read = %v, want %v", rerr, err)
	}
	if _, werr := st.Write([]byte("x")); werr != err {
		t.Errorf("Write = %v, want %v", werr, err)
	}
	if cerr := st.CloseWrite(); cerr != err {
		t.Errorf("CloseWrite = %v, want %v", cerr, err)
	}
	if u := st.Unsent(); string(u) != "hello world" {
		t.Errorf("Unsent = %q, want what was written", u)
	}
	if st.Err() != err {
		t.Errorf("Err = %v", st.Err())
	}
	select {
	case <-st.Done():
	default:
		t.Error("Done is open after a rejection")
	}
}

// Accepted: early data and the marker reach the device, the copy is
// dropped, and the stream goes on as OpenStream's.
func TestStartStreamAccepted(t *testing.T) {
	f := newFakeHub(t)
	release := make(chan struct{})
	newMuxHub(t, f, func(s *hubStream) {
		<-release
		acceptEcho(s)
	})
	c := f.client(t, Options{})
	st, err := c.StartStream(context.Background(), "dev1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := io.Copy(st, strings.NewReader("early bytes")); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	done := st.Done()
	close(release)
	var b bytes.Buffer
	if _, err := io.Copy(&b, st); err != nil || b.String() != "early bytes" {
		t.Fatalf("read %q, %v", b.String(), err)
	}
	if err := st.Accepted(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st.Unsent() != nil {
		t.Errorf("Unsent = %q after an acceptance", st.Unsent())
	}
	st.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Done, taken before the answer, not closed after Close")
	}
	if err := st.Err(); err != nil {
		t.Errorf("Err = %v after a clean end", err)
	}
}

// Before the answer the copy holds a window at most: Write then waits,
// and its bytes are all in Unsent after a rejection.
func TestStartStreamWindow(t *testing.T) {
	f := newFakeHub(t)
	answer := make(chan wire.MuxAnswer)
	newMuxHub(t, f, func(s *hubStream) {
		a := <-answer
		s.answer(a)
		if a.Accepted {
			s.echo()
			return
		}
		s.Close()
	})
	c := f.client(t, Options{})
	for _, accept := range []bool{true, false} {
		st, err := c.StartStream(context.Background(), "dev1", "echo")
		if err != nil {
			t.Fatal(err)
		}
		big := bytes.Repeat([]byte("0123456789abcdef"), muxconn.Window/16+1024)
		type result struct {
			n   int
			err error
		}
		wrote := make(chan result, 1)
		go func() {
			n, err := st.Write(big)
			wrote <- result{n, err}
		}()
		// The copy stops short of the window, whose room for frames is
		// spent: the hub never has more to hold than its window, and
		// Write waits.
		deadline := time.Now().Add(10 * time.Second)
		for {
			st.mu.Lock()
			held, budget := len(st.held), st.budget
			st.mu.Unlock()
			if budget < wsframe.HeaderSize(1, true)+1 {
				if held < muxconn.Window-512 || held > muxconn.Window || budget < 0 {
					t.Fatalf("held %d, budget %d", held, budget)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("held %d, budget %d: Write stopped short", held, budget)
			}
			time.Sleep(time.Millisecond)
		}
		select {
		case r := <-wrote:
			t.Fatalf("Write returned %d, %v before the answer", r.n, r.err)
		default:
		}
		if accept {
			go func() { answer <- wire.MuxAnswer{Status: 200, Accepted: true} }()
			got := make([]byte, len(big))
			if _, err := io.ReadFull(st, got); err != nil || !bytes.Equal(got, big) {
				t.Fatalf("echo: %v", err)
			}
			if r := <-wrote; r.n != len(big) || r.err != nil {
				t.Fatalf("Write = %d, %v", r.n, r.err)
			}
		} else {
			answer <- wire.MuxAnswer{Status: 200, DeviceStatus: 503}
			r := <-wrote
			if !errors.Is(r.err, ErrTargetUnreachable) || r.n == 0 || r.n == len(big) {
				t.Fatalf("Write = %d, %v; want part of it, and the rejection", r.n, r.err)
			}
			if u := st.Unsent(); !bytes.Equal(u, big[:r.n]) {
				t.Errorf("Unsent holds %d bytes, want the %d Write took", len(u), r.n)
			}
		}
		st.Close()
	}
}

// A caller giving up while the hub has not answered resets the session
// stream, which the hub sees end at once.
func TestSessionOpenCanceled(t *testing.T) {
	f := newFakeHub(t)
	arrived := make(chan struct{})
	ended := make(chan error, 1)
	newMuxHub(t, f, func(s *hubStream) {
		close(arrived)
		_, err := s.Read(make([]byte, 1))
		ended <- err
	})
	c := f.client(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.OpenStream(ctx, "dev1", "ssh"); errc <- err }()
	<-arrived
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), `"dev1"`) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, yamux.ErrConnectionReset) {
			t.Errorf("the hub read %v, want the stream reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the session stream stayed open")
	}
	c.mux.mu.Lock()
	open := c.mux.cur.open
	c.mux.mu.Unlock()
	if open != 0 {
		t.Errorf("%d streams counted on the session, want 0", open)
	}
}

// A session that dies is dropped: the next stream dials a new one. A
// stream whose session died before the answer is opened again.
func TestSessionDies(t *testing.T) {
	f := newFakeHub(t)
	h := newMuxHub(t, f, acceptEcho)
	c := f.client(t, Options{})
	conn := openEcho(t, c)
	h.session(0).Close()
	if _, err := io.ReadAll(conn); !errors.Is(err, ErrStreamCut) {
		t.Errorf("a stream on a dead session read %v, want a cut", err)
	}
	conn.Close()
	echoStream(t, c, "again")
	if h.count() != 2 {
		t.Errorf("%d sessions, want 2", h.count())
	}

	// The session ends with the request on it, unanswered.
	var once sync.Once
	h.mu.Lock()
	h.serve = func(s *hubStream) {
		first := false
		once.Do(func() { first = true })
		if first {
			s.sess.Close()
			return
		}
		acceptEcho(s)
	}
	h.mu.Unlock()
	echoStream(t, c, "retried")
	if h.count() != 3 {
		t.Errorf("%d sessions, want 3", h.count())
	}
}

// A hub draining sends GoAway: the next stream opens on a new session,
// the streams open on the old one go on.
func TestSessionGoAway(t *testing.T) {
	f := newFakeHub(t)
	h := newMuxHub(t, f, acceptEcho)
	c := f.client(t, Options{})
	old := openEcho(t, c)
	h.session(0).GoAway()
	// GoAway travels on its own: wait until the client's session has it.
	c.mux.mu.Lock()
	s := c.mux.cur
	c.mux.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ys, err := s.ys.OpenStream()
		if errors.Is(err, yamux.ErrRemoteGoAway) {
			break
		}
		if err == nil {
			ys.Close()
		}
		if time.Now().After(deadline) {
			t.Fatal("GoAway did not arrive")
		}
		time.Sleep(time.Millisecond)
	}
	echoStream(t, c, "new")
	if h.count() != 2 {
		t.Errorf("%d sessions, want 2", h.count())
	}
	echoOnce(t, old, "old")
	if s.ys.IsClosed() {
		t.Error("the old session closed with a stream open")
	}
	old.Close()
	select {
	case <-s.ys.CloseChan():
	case <-time.After(10 * time.Second):
		t.Error("the old session stayed open after its last stream")
	}
}

// Close closes an idle session at once, and one with streams after the
// last of them.
func TestSessionClose(t *testing.T) {
	f := newFakeHub(t)
	h := newMuxHub(t, f, acceptEcho)
	c := f.client(t, Options{})
	conn := openEcho(t, c)
	c.Close()
	echoOnce(t, conn, "still open")
	if h.session(0).IsClosed() {
		t.Fatal("Close cut a stream")
	}
	conn.Close()
	select {
	case <-h.session(0).CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the session stayed open after Close and its last stream")
	}
	// The client stays usable.
	echoStream(t, c, "after Close")
	c.Close()
	select {
	case <-h.session(1).CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("Close left an idle session open")
	}
}

// A hub without sessions (404 on the session path, as Azure's) gets
// streams of their own, and is not asked again for the client's life.
func TestSessionFallbackForGood(t *testing.T) {
	f := newFakeHub(t)
	f.handle(func(w http.ResponseWriter, r *http.Request) { w.Header().Set(wire.HeaderIsAccepted, "False") })
	c := f.client(t, Options{})
	for range 3 {
		if _, err := c.OpenStream(context.Background(), "dev1", "ssh"); !errors.Is(err, ErrRejected) {
			t.Fatalf("err = %v, want the POST's rejection", err)
		}
		st, err := c.StartStream(context.Background(), "dev1", "ssh")
		if !errors.Is(err, ErrRejected) || st != nil {
			t.Fatalf("StartStream = %v, %v; want the POST's rejection", st, err)
		}
	}
	if d := f.sessionDials(); d != 1 {
		t.Errorf("%d session dials, want 1", d)
	}
}

// An answer that may be a proxy's (503) sends this stream its own way,
// and a later one tries the session again, after a back-off.
func TestSessionFallbackOnce(t *testing.T) {
	f := newFakeHub(t)
	f.handle(func(w http.ResponseWriter, r *http.Request) { w.Header().Set(wire.HeaderIsAccepted, "False") })
	f.mu.Lock()
	f.mux = func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no backend", http.StatusServiceUnavailable)
	}
	f.mu.Unlock()
	c := f.client(t, Options{})
	dials := f.sessionDials
	for range 2 {
		if _, err := c.OpenStream(context.Background(), "dev1", "ssh"); !errors.Is(err, ErrRejected) {
			t.Fatalf("err = %v, want the POST's rejection", err)
		}
	}
	if dials() != 1 {
		t.Errorf("%d session dials within the back-off, want 1", dials())
	}
	c.mux.mu.Lock()
	backoff := c.mux.backoff
	c.mux.retryAt = time.Time{} // the back-off passed
	c.mux.mu.Unlock()
	if backoff != sessionRetryMin {
		t.Errorf("back-off %v, want %v", backoff, sessionRetryMin)
	}
	newMuxHub(t, f, acceptEcho)
	echoStream(t, c, "on a session")
	if dials() != 2 {
		t.Errorf("%d session dials, want 2", dials())
	}
}

// Streams that start together wait for one dial of the session.
func TestSessionOneDial(t *testing.T) {
	f := newFakeHub(t)
	release, dialed := make(chan struct{}), make(chan struct{}, 1)
	h := newMuxHub(t, f, acceptEcho)
	f.mu.Lock()
	f.mux = func(w http.ResponseWriter, r *http.Request) {
		dialed <- struct{}{}
		<-release
		h.handle(w, r)
	}
	f.mu.Unlock()
	c := f.client(t, Options{})
	echoed := make(chan struct{})
	go func() {
		defer close(echoed)
		echoMany(t, c, "dev1", 20)
	}()
	// A caller that gives up waiting does not fail the dial.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.OpenStream(ctx, "dev1", "echo"); errc <- err }()
	<-dialed
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("a canceled wait for the session: %v", err)
	}
	close(release)
	<-echoed
	if h.count() != 1 {
		t.Errorf("%d sessions, want 1", h.count())
	}
}

// Options.NoSessions never dials one.
func TestNoSessions(t *testing.T) {
	f := newFakeHub(t)
	newMuxHub(t, f, acceptEcho)
	f.handle(func(w http.ResponseWriter, r *http.Request) { w.Header().Set(wire.HeaderIsAccepted, "False") })
	c := f.client(t, Options{NoSessions: true})
	if _, err := c.OpenStream(context.Background(), "dev1", "ssh"); !errors.Is(err, ErrRejected) {
		t.Fatalf("err = %v", err)
	}
	if d := f.sessionDials(); d != 0 {
		t.Errorf("%d session dials", d)
	}
}
