package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	hubrelay "github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/internal/wstest"
	"github.com/tether-io/tether/wire"
)

// streamPair opens one stream through an in-process hub relay and returns
// its two sides as Tether's SDKs get them (wsconn over TLS, both speaking
// tether-stream.v1).
func streamPair(t *testing.T) (svc, dev net.Conn) {
	t.Helper()
	r, url, tlsConf := startRelay(t)
	st, err := r.Open("dev1", "echo", 0)
	if err != nil {
		t.Fatal(err)
	}
	svc = dialSide(t, url(st), st.ServiceToken, tlsConf)
	dev = dialSide(t, url(st), st.DeviceToken, tlsConf)
	return svc, dev
}

func startRelay(t *testing.T) (*hubrelay.Relay, func(*hubrelay.Stream) string, *tls.Config) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	r := hubrelay.New(hubrelay.Options{})
	srv := httptest.NewUnstartedServer(r)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { r.Close() })
	url := func(st *hubrelay.Stream) string {
		return "wss://" + srv.Listener.Addr().String() + wire.BridgePath("hub1", st.DeviceID, st.Name, st.ID)
	}
	return r, url, srv.Client().Transport.(*http.Transport).TLSClientConfig
}

func dialSide(t *testing.T, url, token string, tlsConf *tls.Config) net.Conn {
	t.Helper()
	c, err := wsconn.Dial(context.Background(), url, token, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tunnel runs both relays of a tunnel, as `forward` and `agent` do:
// user ⇄ forward relay ⇄ stream ⇄ agent relay ⇄ target. It returns the
// user's and the target's ends and the two relays' results.
func tunnel(t *testing.T, svc, dev net.Conn) (user, target *net.TCPConn, fwdErr, agentErr chan error) {
	t.Helper()
	u, client := tcpPair(t)
	tc, tgt := tcpPair(t)
	fwdErr, agentErr = make(chan error, 1), make(chan error, 1)
	go func() { fwdErr <- relay(context.Background(), client, svc, "client → device", "device → client") }()
	go func() { agentErr <- relay(context.Background(), tc, dev, "target → service", "service → target") }()
	return u.(*net.TCPConn), tgt.(*net.TCPConn), fwdErr, agentErr
}

func waitRelay(t *testing.T, name string, errc chan error) {
	t.Helper()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("%s relay: %v", name, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s relay did not return", name)
	}
}

// TestRelayHalfCloseAnswer is `nc -N`, `ssh host 'cat > f'`: the user sends
// 1 MiB and half-closes; the target reads to EOF and only then answers,
// and the answer reaches the user whole, followed by EOF.
func TestRelayHalfCloseAnswer(t *testing.T) {
	svc, dev := streamPair(t)
	user, target, fwdErr, agentErr := tunnel(t, svc, dev)

	req := make([]byte, 1<<20)
	rand.Read(req)
	go func() {
		user.Write(req)
		user.CloseWrite()
	}()
	go func() {
		h := sha256.New()
		io.Copy(h, target)
		target.Write(h.Sum(nil))
		target.Close()
	}()
	got, err := io.ReadAll(user)
	if err != nil {
		t.Fatalf("user read: %v", err)
	}
	if want := sha256.Sum256(req); !bytes.Equal(got, want[:]) {
		t.Fatalf("user got %x, want the request's SHA-256 %x", got, want)
	}
	waitRelay(t, "forward", fwdErr)
	waitRelay(t, "agent", agentErr)
}

// TestRelayTargetHalfCloses: the other way round, the target says its
// piece and half-closes first, then reads what the user sends.
func TestRelayTargetHalfCloses(t *testing.T) {
	svc, dev := streamPair(t)
	user, target, fwdErr, agentErr := tunnel(t, svc, dev)

	got := make(chan string, 1)
	go func() {
		target.Write([]byte("banner"))
		target.CloseWrite()
		b, _ := io.ReadAll(target)
		got <- string(b)
		target.Close()
	}()
	banner, err := io.ReadAll(user)
	if err != nil || string(banner) != "banner" {
		t.Fatalf("user read %q, %v; want banner then EOF", banner, err)
	}
	user.Write([]byte("reply after EOF"))
	user.CloseWrite()
	if s := <-got; s != "reply after EOF" {
		t.Fatalf("target read %q", s)
	}
	waitRelay(t, "forward", fwdErr)
	waitRelay(t, "agent", agentErr)
}

// TestRelayStreamEndsAfterHalfClose: after the peer's EOF the relay waits
// for local's bytes; when the stream then ends whole, it stops waiting on
// a local peer that sends nothing.
func TestRelayStreamEndsAfterHalfClose(t *testing.T) {
	svc, dev := streamPair(t)
	user, client := tcpPair(t)
	done := make(chan error, 1)
	go func() { done <- relay(context.Background(), client, svc, "client → device", "device → client") }()

	dev.Write([]byte("bye"))
	dev.(interface{ CloseWrite() error }).CloseWrite()
	got, err := io.ReadAll(user)
	if err != nil || string(got) != "bye" {
		t.Fatalf("user read %q, %v", got, err)
	}
	select {
	case err := <-done:
		t.Fatalf("relay returned (%v) while the user could still send", err)
	default:
	}
	// The user sends nothing more; the device goes away.
	dev.Close()
	waitRelay(t, "forward", done)
}

// TestRelayHalfCloseTowardAzure: toward a peer without tether-stream.v1 (the
// C SDK), local EOF closes the stream, as before half-close existed.
func TestRelayHalfCloseTowardAzure(t *testing.T) {
	r, url, tlsConf := startRelay(t)
	st, err := r.Open("dev1", "echo", 0)
	if err != nil {
		t.Fatal(err)
	}
	svc := dialSide(t, url(st), st.ServiceToken, tlsConf)
	d := ws.Dialer{
		Header:    ws.HandshakeHeaderString("Authorization: Bearer " + st.DeviceToken + "\r\n"),
		TLSConfig: tlsConf,
		Protocols: []string{"MQTT"},
	}
	dev, br, _, err := d.Dial(context.Background(), url(st))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	var devR io.Reader = dev
	if br != nil {
		devR = io.MultiReader(br, dev)
	}
	user, client := tcpPair(t)
	done := make(chan error, 1)
	go func() { done <- relay(context.Background(), client, svc, "client → device", "device → client") }()
	user.Write([]byte("hello"))
	user.(*net.TCPConn).CloseWrite()

	var data []byte
	for {
		f, err := wstest.ReadFrame(devR, 1<<20)
		if err != nil {
			t.Fatalf("device read: %v", err)
		}
		if f.Header.OpCode == ws.OpClose {
			if code, _ := ws.ParseCloseFrameData(f.Payload); code != ws.StatusNormalClosure {
				t.Errorf("close code %d, want 1000", code)
			}
			break
		}
		data = append(data, f.Payload...)
	}
	if string(data) != "hello" {
		t.Errorf("device got %q", data)
	}
	waitRelay(t, "forward", done)
	if b, err := io.ReadAll(user); len(b) != 0 || err != nil {
		t.Errorf("user read %q, %v; want EOF", b, err)
	}
}
