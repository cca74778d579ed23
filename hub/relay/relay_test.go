package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/internal/wsframe"
	"github.com/tether-io/tether/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testHub is a relay served over TLS on 127.0.0.1, with every Info it
// reports.
type testHub struct {
	r    *Relay
	srv  *httptest.Server
	tls  *tls.Config
	done chan Info
}

func newHub(t testing.TB, opts Options) *testHub {
	t.Helper()
	h := &testHub{done: make(chan Info, 1024)}
	opts.OnDone = func(i Info) { h.done <- i }
	h.r = New(opts)
	h.srv = httptest.NewUnstartedServer(h.r)
	h.srv.StartTLS()
	h.tls = h.srv.Client().Transport.(*http.Transport).TLSClientConfig
	// Cleanups run last first: the relay ends its hijacked conns, then the
	// server closes.
	t.Cleanup(h.srv.Close)
	t.Cleanup(func() { h.r.Close() })
	return h
}

func (h *testHub) open(t testing.TB, device string, window time.Duration) *Stream {
	t.Helper()
	st, err := h.r.Open(device, "ssh", window)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return st
}

func (h *testHub) url(st *Stream) string {
	return "wss://" + h.srv.Listener.Addr().String() + wire.BridgePath("hub1", st.DeviceID, st.Name, st.ID)
}

// httpURL is the stream's URL for a plain HTTPS request.
func (h *testHub) httpURL(st *Stream) string {
	return h.srv.URL + wire.BridgePath("hub1", st.DeviceID, st.Name, st.ID)
}

func (h *testHub) dial(st *Stream, token string) (net.Conn, error) {
	return wsconn.Dial(context.Background(), h.url(st), token, h.tls)
}

func (h *testHub) mustDial(t testing.TB, st *Stream, token string) net.Conn {
	t.Helper()
	c, err := h.dial(st, token)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// info waits for the next stream to end.
func (h *testHub) info(t testing.TB) Info {
	t.Helper()
	select {
	case i := <-h.done:
		return i
	case <-time.After(10 * time.Second):
		t.Fatal("no stream ended within 10s")
		return Info{}
	}
}

func wantUnauthorized(t *testing.T, err error) {
	t.Helper()
	var he *wsconn.HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("error %v (%T), want *wsconn.HandshakeError", err, err)
	}
	if he.StatusCode != http.StatusUnauthorized || he.Code != wire.CodeUnauthorized {
		t.Fatalf("got %+v, want 401 / %d", he, wire.CodeUnauthorized)
	}
}

// readWithin reads from c until an error and fails unless that happens
// within d.
func readWithin(t *testing.T, c net.Conn, d time.Duration) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(d):
		t.Fatalf("Read did not end within %v", d)
		return nil
	}
}

func TestPairing(t *testing.T) {
	for _, first := range []side{service, device} {
		t.Run(first.String()+" first", func(t *testing.T) {
			h := newHub(t, Options{})
			// A device ID that needs escaping in the path.
			st := h.open(t, "dev 1/x", 0)
			tokens := [2]string{st.ServiceToken, st.DeviceToken}
			a := h.mustDial(t, st, tokens[first])
			// Sent before the peer exists: must not be lost.
			early := []byte("sent while waiting for the peer")
			if _, err := a.Write(early); err != nil {
				t.Fatal(err)
			}
			if n := h.r.Active(); n != 1 {
				t.Errorf("Active = %d, want 1", n)
			}
			b := h.mustDial(t, st, tokens[1-first])
			got := make([]byte, len(early))
			if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, early) {
				t.Fatalf("peer read %q, %v; want %q", got, err, early)
			}
			if _, err := b.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			got = make([]byte, 4)
			if _, err := io.ReadFull(a, got); err != nil || string(got) != "pong" {
				t.Fatalf("first side read %q, %v", got, err)
			}
			a.Close()
			readWithin(t, b, time.Second)
			i := h.info(t)
			if !i.PairedOK || i.ClosedBy != first.String() || i.Paired.IsZero() || i.ID != st.ID {
				t.Errorf("Info %+v", i)
			}
			toFirst, toSecond := int64(4), int64(len(early))
			if first == service {
				toFirst, toSecond = toSecond, toFirst
				if i.BytesToDevice != toFirst || i.BytesToService != toSecond {
					t.Errorf("bytes to device %d, to service %d", i.BytesToDevice, i.BytesToService)
				}
			} else if i.BytesToService != toSecond || i.BytesToDevice != toFirst {
				t.Errorf("bytes to device %d, to service %d", i.BytesToDevice, i.BytesToService)
			}
			if n := h.r.Active(); n != 0 {
				t.Errorf("Active after end = %d", n)
			}
		})
	}
}

// sendRandom writes n random bytes in writes of random sizes and returns
// their hash.
func sendRandom(c net.Conn, n int, seed uint64) ([32]byte, error) {
	rng := mrand.New(mrand.NewPCG(seed, seed))
	hash := sha256.New()
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, 1+rng.IntN(len(buf)))
		p := buf[:k]
		rand.Read(p)
		hash.Write(p)
		if _, err := c.Write(p); err != nil {
			return [32]byte{}, err
		}
		n -= k
	}
	return [32]byte(hash.Sum(nil)), nil
}

func recvHash(c net.Conn, n int) ([32]byte, error) {
	hash := sha256.New()
	if _, err := io.CopyN(hash, c, int64(n)); err != nil {
		return [32]byte{}, err
	}
	return [32]byte(hash.Sum(nil)), nil
}

// exchange sends n random bytes each way at once and checks both arrive
// whole.
func exchange(svc, dev net.Conn, n int) error {
	type res struct {
		sum [32]byte
		err error
	}
	var sent, recv [2]res
	var wg sync.WaitGroup
	for i, c := range []net.Conn{svc, dev} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			sent[i].sum, sent[i].err = sendRandom(c, n, uint64(i+1))
		}()
		go func() {
			defer wg.Done()
			recv[i].sum, recv[i].err = recvHash(c, n)
		}()
	}
	wg.Wait()
	for i := range 2 {
		if err := errors.Join(sent[i].err, recv[i].err); err != nil {
			return err
		}
	}
	if sent[0].sum != recv[1].sum {
		return errors.New("service->device bytes differ")
	}
	if sent[1].sum != recv[0].sum {
		return errors.New("device->service bytes differ")
	}
	return nil
}

func TestLargeBothWays(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	svc := h.mustDial(t, st, st.ServiceToken)
	dev := h.mustDial(t, st, st.DeviceToken)
	const n = 16 << 20
	if err := exchange(svc, dev, n); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	if err := readWithin(t, svc, time.Second); err != io.EOF {
		t.Errorf("service read ended with %v, want io.EOF", err)
	}
	i := h.info(t)
	if i.BytesToDevice != n || i.BytesToService != n {
		t.Errorf("Info bytes to device %d, to service %d; want %d each", i.BytesToDevice, i.BytesToService, n)
	}
	if i.ClosedBy != ClosedByDevice || !strings.Contains(i.Reason, "1000") {
		t.Errorf("ClosedBy %q reason %q", i.ClosedBy, i.Reason)
	}
}

func TestManyStreams(t *testing.T) {
	h := newHub(t, Options{})
	const streams = 100
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for k := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				st, err := h.r.Open(fmt.Sprintf("dev%d", k), "ssh", 0)
				if err != nil {
					return err
				}
				// Both sides dial at once, as a device and a service would.
				var svc, dev net.Conn
				var serr, derr error
				var dw sync.WaitGroup
				dw.Add(2)
				go func() { defer dw.Done(); svc, serr = h.dial(st, st.ServiceToken) }()
				go func() { defer dw.Done(); dev, derr = h.dial(st, st.DeviceToken) }()
				dw.Wait()
				if err := errors.Join(serr, derr); err != nil {
					for _, c := range []net.Conn{svc, dev} {
						if c != nil {
							c.Close()
						}
					}
					return err
				}
				defer svc.Close()
				defer dev.Close()
				if err := exchange(svc, dev, 64<<10+k); err != nil {
					return fmt.Errorf("stream %d: %w", k, err)
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for range streams {
		if i := h.info(t); !i.PairedOK || i.BytesToDevice != i.BytesToService {
			t.Errorf("Info %+v", i)
		}
	}
}

func TestTokenUsedTwice(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	h.mustDial(t, st, st.ServiceToken)
	_, err := h.dial(st, st.ServiceToken)
	wantUnauthorized(t, err)
}

func TestTokenOfOtherStream(t *testing.T) {
	h := newHub(t, Options{})
	a := h.open(t, "devA", 0)
	b := h.open(t, "devB", 0)
	for _, tok := range []string{a.ServiceToken, a.DeviceToken} {
		_, err := h.dial(b, tok)
		wantUnauthorized(t, err)
	}
	// Same device, same name, another stream.
	a2 := h.open(t, "devA", 0)
	_, err := h.dial(a2, a.ServiceToken)
	wantUnauthorized(t, err)

	// Presented on the wrong URL, A's tokens were not spent.
	svc := h.mustDial(t, a, a.ServiceToken)
	dev := h.mustDial(t, a, a.DeviceToken)
	if err := exchange(svc, dev, 1000); err != nil {
		t.Fatal(err)
	}
}

// TestTokenDecidesSide: whoever presents the device token is the device,
// and cannot be the service too.
func TestTokenDecidesSide(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	asDevice := h.mustDial(t, st, st.DeviceToken)
	_, err := h.dial(st, st.DeviceToken)
	wantUnauthorized(t, err)
	asService := h.mustDial(t, st, st.ServiceToken)
	if _, err := asService.Write(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(asDevice, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := asDevice.Write(make([]byte, 20)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(asService, make([]byte, 20)); err != nil {
		t.Fatal(err)
	}
	asService.Close()
	i := h.info(t)
	if i.BytesToDevice != 10 || i.BytesToService != 20 || i.ClosedBy != ClosedByService {
		t.Errorf("Info %+v", i)
	}
}

// TestUnauthorizedAnswer checks the HTTP answer itself, for requests that
// never get as far as a WebSocket.
func TestUnauthorizedAnswer(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	for _, auth := range []string{"", "Bearer", "Bearer nosuchtoken", "Basic " + st.ServiceToken} {
		req, _ := http.NewRequest(http.MethodGet, h.httpURL(st), nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		code, _ := wire.DecodeError(body)
		if res.StatusCode != http.StatusUnauthorized || code != wire.CodeUnauthorized ||
			res.Header.Get(wire.HeaderErrorCode) != "IotHubUnauthorizedAccess" {
			t.Errorf("auth %q: HTTP %d, %s %q, body %s", auth, res.StatusCode,
				wire.HeaderErrorCode, res.Header.Get(wire.HeaderErrorCode), body)
		}
	}
	// A right token on a plain GET is refused without spending it.
	req, _ := http.NewRequest(http.MethodGet, h.httpURL(st), nil)
	req.Header.Set("Authorization", "Bearer "+st.ServiceToken)
	res, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("plain GET with a good token: HTTP %d, want 400", res.StatusCode)
	}
	h.mustDial(t, st, st.ServiceToken)
}

// rawDial opens a stream side with gobwas directly, to see frames as they
// are on the wire.
func rawDial(t *testing.T, h *testHub, st *Stream, token string) (net.Conn, io.Reader) {
	t.Helper()
	conn, r, proto := rawDialProto(t, h, st, token, "MQTT") // what the C SDK offers
	if proto != "" {
		t.Fatalf("hub selected subprotocol %q for a client offering MQTT", proto)
	}
	return conn, r
}

// rawDialProto is rawDial offering protos, and returns what the hub
// selected.
func rawDialProto(t *testing.T, h *testHub, st *Stream, token string, protos ...string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	return dialWith(t, h, st, ws.Dialer{
		Header:    ws.HandshakeHeaderString("Authorization: Bearer " + token + "\r\n"),
		TLSConfig: h.tls,
		Protocols: protos,
	})
}

// dialWith opens a stream side with d and returns its conn, a reader of
// its frames and the subprotocol the hub selected.
func dialWith(t *testing.T, h *testHub, st *Stream, d ws.Dialer) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	conn, br, hs, err := d.Dial(context.Background(), h.url(st))
	if err != nil {
		t.Fatalf("raw Dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	return conn, bufio.NewReader(r), hs.Protocol
}

func rawWrite(t *testing.T, c net.Conn, op ws.OpCode, fin bool, p []byte) {
	t.Helper()
	f := ws.MaskFrame(ws.NewFrame(op, fin, p))
	if err := ws.WriteFrame(c, f); err != nil {
		t.Fatalf("write frame: %v", err)
	}
}

type frame struct {
	op      ws.OpCode
	fin     bool
	payload string
}

func rawRead(t *testing.T, r io.Reader) frame {
	t.Helper()
	hd, err := ws.ReadHeader(r)
	if err != nil {
		t.Fatalf("read header: %v", err)
	}
	if hd.Masked {
		t.Errorf("hub sent a masked frame")
	}
	p := make([]byte, hd.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatalf("read payload: %v", err)
	}
	return frame{hd.OpCode, hd.Fin, string(p)}
}

// TestFrames checks that opcodes and FIN bits survive the relay, that
// pings are answered by the hub and pongs dropped, that a frame larger
// than the buffer arrives whole in fragments, and that a close frame is
// passed on with its code and echoed.
func TestFrames(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	svc, svcR := rawDial(t, h, st, st.ServiceToken)
	dev, devR := rawDial(t, h, st, st.DeviceToken)

	rawWrite(t, svc, ws.OpText, true, []byte("hello"))
	rawWrite(t, svc, ws.OpPing, true, []byte("are you there"))
	rawWrite(t, svc, ws.OpBinary, false, []byte("ab"))
	rawWrite(t, svc, ws.OpPong, true, []byte("unsolicited"))
	rawWrite(t, svc, ws.OpContinuation, true, []byte("cd"))
	rawWrite(t, svc, ws.OpBinary, true, nil)
	for _, want := range []frame{
		{ws.OpText, true, "hello"},
		{ws.OpBinary, false, "ab"},
		{ws.OpContinuation, true, "cd"},
		{ws.OpBinary, true, ""},
	} {
		if got := rawRead(t, devR); got != want {
			t.Errorf("device got %+v, want %+v", got, want)
		}
	}
	if got := rawRead(t, svcR); got != (frame{ws.OpPong, true, "are you there"}) {
		t.Errorf("service got %+v, want the pong", got)
	}

	big := make([]byte, 2*bufSize+1234)
	rand.Read(big)
	rawWrite(t, dev, ws.OpText, true, big)
	var got []byte
	for k := 0; ; k++ {
		f := rawRead(t, svcR)
		wantOp := ws.OpText
		if k > 0 {
			wantOp = ws.OpContinuation
		}
		if f.op != wantOp {
			t.Fatalf("fragment %d: opcode %v, want %v", k, f.op, wantOp)
		}
		got = append(got, f.payload...)
		if f.fin {
			break
		}
	}
	if !bytes.Equal(got, big) {
		t.Fatal("large frame differs")
	}

	rawWrite(t, dev, ws.OpClose, true, ws.NewCloseFrameBody(4000, "done"))
	f := rawRead(t, svcR)
	code, reason := ws.ParseCloseFrameData([]byte(f.payload))
	if f.op != ws.OpClose || code != 4000 || reason != "done" {
		t.Errorf("service got %+v, want close 4000 done", f)
	}
	f = rawRead(t, devR)
	if code, _ := ws.ParseCloseFrameData([]byte(f.payload)); f.op != ws.OpClose || code != 4000 {
		t.Errorf("device got %+v, want its close echoed", f)
	}
	i := h.info(t)
	if i.ClosedBy != ClosedByDevice || !strings.Contains(i.Reason, "4000") {
		t.Errorf("Info %+v", i)
	}
	if i.BytesToDevice != 9 || i.BytesToService != int64(len(big)) {
		t.Errorf("bytes to device %d, to service %d", i.BytesToDevice, i.BytesToService)
	}
}

func TestWindowExpiry(t *testing.T) {
	h := newHub(t, Options{Window: 200 * time.Millisecond})
	st := h.open(t, "dev1", 0)
	svc, svcR := rawDial(t, h, st, st.ServiceToken)
	rawWrite(t, svc, ws.OpBinary, true, []byte("nobody will read this"))
	f := rawRead(t, svcR)
	code, reason := ws.ParseCloseFrameData([]byte(f.payload))
	if f.op != ws.OpClose || code != ws.StatusInternalServerError ||
		reason != "peer did not connect within the handshake window" {
		t.Errorf("waiting side got %+v", f)
	}
	if _, err := svcR.Read(make([]byte, 1)); err == nil {
		t.Error("conn still open after the window")
	}
	i := h.info(t)
	if i.ClosedBy != ClosedByWindow || i.PairedOK || !i.Paired.IsZero() {
		t.Errorf("Info %+v", i)
	}
	_, err := h.dial(st, st.DeviceToken)
	wantUnauthorized(t, err)
	if n := h.r.Active(); n != 0 {
		t.Errorf("Active = %d", n)
	}
}

func TestWindowExpiryNobody(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 50*time.Millisecond)
	if i := h.info(t); i.ClosedBy != ClosedByWindow || i.ID != st.ID {
		t.Errorf("Info %+v", i)
	}
}

func TestCloseEndsOtherSide(t *testing.T) {
	for _, closer := range []side{service, device} {
		t.Run(closer.String(), func(t *testing.T) {
			h := newHub(t, Options{})
			st := h.open(t, "dev1", 0)
			conns := [2]net.Conn{
				h.mustDial(t, st, st.ServiceToken),
				h.mustDial(t, st, st.DeviceToken),
			}
			if err := exchange(conns[0], conns[1], 100); err != nil {
				t.Fatal(err)
			}
			conns[closer].Close()
			if err := readWithin(t, conns[1-closer], time.Second); err != io.EOF {
				t.Errorf("other side's read ended with %v, want io.EOF", err)
			}
			if i := h.info(t); i.ClosedBy != closer.String() {
				t.Errorf("Info %+v", i)
			}
		})
	}
}

// TestDropEndsOtherSide: a side whose TCP conn just ends, with no close
// frame.
func TestDropEndsOtherSide(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	svc := h.mustDial(t, st, st.ServiceToken)
	dev, _ := rawDial(t, h, st, st.DeviceToken)
	dev.Close()
	readWithin(t, svc, time.Second)
	if i := h.info(t); i.ClosedBy != ClosedByDevice || !strings.Contains(i.Reason, "device->service") {
		t.Errorf("Info %+v", i)
	}
}

func TestCancel(t *testing.T) {
	h := newHub(t, Options{})
	st := h.open(t, "dev1", 0)
	svc := h.mustDial(t, st, st.ServiceToken)
	h.r.Cancel(st.ID)
	readWithin(t, svc, time.Second)
	_, err := h.dial(st, st.DeviceToken)
	wantUnauthorized(t, err)
	if i := h.info(t); i.ClosedBy != ClosedByHub || i.PairedOK {
		t.Errorf("Info %+v", i)
	}
	h.r.Cancel(st.ID) // a second time, and an unknown ID: nothing happens
	h.r.Cancel("nosuchstream")
	if n := h.r.Active(); n != 0 {
		t.Errorf("Active = %d", n)
	}
}

func TestClose(t *testing.T) {
	h := newHub(t, Options{})
	waiting := h.open(t, "dev1", 0)
	paired := h.open(t, "dev2", 0)
	h.open(t, "dev3", 0) // nobody comes
	w := h.mustDial(t, waiting, waiting.DeviceToken)
	svc := h.mustDial(t, paired, paired.ServiceToken)
	dev := h.mustDial(t, paired, paired.DeviceToken)
	if err := exchange(svc, dev, 1000); err != nil {
		t.Fatal(err)
	}
	if n := h.r.Active(); n != 3 {
		t.Errorf("Active = %d, want 3", n)
	}

	if err := h.r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, c := range []net.Conn{w, svc, dev} {
		readWithin(t, c, time.Second)
	}
	for range 3 {
		if i := h.info(t); i.ClosedBy != ClosedByHub {
			t.Errorf("Info %+v", i)
		}
	}
	if n := h.r.Active(); n != 0 {
		t.Errorf("Active after Close = %d", n)
	}
	if err := h.r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.r.Open("dev1", "ssh", 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Open after Close: %v, want ErrClosed", err)
	}
	res, err := h.srv.Client().Get(h.httpURL(waiting))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("after Close: HTTP %d, want 503", res.StatusCode)
	}
}

func TestOpenValidates(t *testing.T) {
	r := New(Options{})
	defer r.Close()
	for _, c := range [][2]string{{"", "ssh"}, {"dev", ""}, {"dev", "a/b"}} {
		if _, err := r.Open(c[0], c[1], 0); !errors.Is(err, ErrBadStream) {
			t.Errorf("Open(%q, %q): %v", c[0], c[1], err)
		}
	}
	st, err := r.Open("dev 1/x", "ssh", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.ServiceToken == st.DeviceToken || st.ServiceToken == "" || st.ID == "" {
		t.Errorf("Stream %+v", st)
	}
	if d := time.Until(st.Expires); d < 59*time.Second || d > 61*time.Second {
		t.Errorf("default window gives expiry in %v", d)
	}
}

func BenchmarkRelay(b *testing.B) {
	for _, size := range []int{32 << 10, 256<<10 - ws.MaxHeaderSize} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			h := newHub(b, Options{})
			st := h.open(b, "dev1", 0)
			svc := h.mustDial(b, st, st.ServiceToken)
			dev := h.mustDial(b, st, st.DeviceToken)
			msg := make([]byte, size)
			rand.Read(msg)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			done := make(chan error, 1)
			go func() {
				_, err := io.CopyN(io.Discard, dev, int64(size)*int64(b.N))
				done <- err
			}()
			for range b.N {
				if _, err := svc.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestCopyNoAllocs checks that relaying a data frame allocates nothing.
func TestCopyNoAllocs(t *testing.T) {
	svcEnd, svcHub := tcpPair(t)
	devEnd, devHub := tcpPair(t)
	pp := &pipe{r: New(Options{})}
	pp.peers[service] = newPeer(service, svcHub, bufio.NewReader(strings.NewReader("")), time.Minute)
	pp.peers[device] = newPeer(device, devHub, bufio.NewReader(strings.NewReader("")), time.Minute)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Add(1)
		pp.serviceToDevice(&wg, new(int64))
	}()

	payload := make([]byte, 64<<10)
	rand.Read(payload)
	var frame bytes.Buffer
	ws.WriteFrame(&frame, ws.MaskFrame(ws.NewBinaryFrame(payload)))
	hs := wsframe.HeaderSize(len(payload), false)
	out := make([]byte, hs+len(payload))
	relayOne := func() {
		if _, err := svcEnd.Write(frame.Bytes()); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(devEnd, out); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(100, relayOne); n != 0 {
		t.Errorf("%v allocations per relayed frame", n)
	}
	if !bytes.Equal(out[hs:], payload) {
		t.Error("payload differs")
	}
	svcEnd.Close()
	<-done
}
