package device

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tether-io/tether/device/devicetest"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var transports = []Transport{WebSocket, TLS}

// forEachTransport runs f once over MQTT over WebSocket and once over TLS.
func forEachTransport(t *testing.T, f func(t *testing.T, tr Transport)) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) { f(t, tr) })
	}
}

func testOptions(t testing.TB, b *devicetest.Hub, tr Transport) (Options, *syncBuffer) {
	log, buf := testLogger(t)
	return Options{
		TLSConfig:   devicetest.ClientTLS(),
		Transport:   tr,
		MQTTAddress: b.TLSAddr,
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  100 * time.Millisecond,
		Logger:      log,
	}, buf
}

func mustDial(t testing.TB, b *devicetest.Hub, key string, tr Transport) (*Client, *syncBuffer) {
	t.Helper()
	opts, logs := testOptions(t, b, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, b.ConnStr(key), opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, logs
}

func nextRequest(t testing.TB, c *Client) *Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	return r
}

func TestConnect(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		key := devicetest.NewKey()
		b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
		c, logs := mustDial(t, b, key, tr)
		if !c.Connected() {
			t.Fatal("Connected() = false after Dial")
		}
		ci := b.NextConnect()
		if ci.ClientID != "dev1" {
			t.Errorf("client ID = %q, want dev1", ci.ClientID)
		}
		wantUser := b.HTTPAddr + "/dev1/?api-version=2020-09-30&DeviceClientType=" + wantClientType
		if ci.Username != wantUser {
			t.Errorf("username = %q, want %q", ci.Username, wantUser)
		}
		tok, err := sas.ParseToken(ci.Password)
		if err != nil {
			t.Fatalf("password is not a SAS token: %v", err)
		}
		if err := tok.Verify(key, time.Now()); err != nil {
			t.Errorf("password does not verify: %v", err)
		}
		if tok.Resource != b.HTTPAddr+"/devices/dev1" {
			t.Errorf("token resource = %q", tok.Resource)
		}
		if ttl := time.Until(tok.Expiry); ttl < 50*time.Minute || ttl > 61*time.Minute {
			t.Errorf("token lives %v, want about an hour", ttl)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if s := logs.String(); strings.Contains(s, key) || strings.Contains(s, ci.Password) || strings.Contains(s, "sig=") {
			t.Errorf("the log holds the key or the token:\n%s", s)
		}
	})
}

func TestModuleIdentity(t *testing.T) {
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	opts, _ := testOptions(t, b, TLS)
	c, err := Dial(context.Background(), b.ConnStr(key)+";ModuleId=m1", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ci := b.NextConnect()
	if ci.ClientID != "dev1/m1" {
		t.Errorf("client ID = %q, want dev1/m1", ci.ClientID)
	}
	if want := b.HTTPAddr + "/dev1/m1/?api-version=2020-09-30&DeviceClientType=" + wantClientType; ci.Username != want {
		t.Errorf("username = %q, want %q", ci.Username, want)
	}
}

func TestRequestRejectAndAccept(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		key := devicetest.NewKey()
		b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
		c, logs := mustDial(t, b, key, tr)
		const token = "Zm9vYmFyLXN0cmVhbS10b2tlbg"
		bridge := devicetest.StartBridge(t, token, true)
		url := "wss://" + bridge.Addr + wire.BridgePath("hub", "dev1", "ssh", "s1")

		// Reject.
		b.SendRequest(wire.StreamRequest{Name: "ssh", RID: "r1", URL: url, Token: token}.Topic())
		r := nextRequest(t, c)
		if r.Name != "ssh" || r.RID != "r1" || r.URL != url {
			t.Fatalf("request = %+v", r)
		}
		if err := r.Reject(); err != nil {
			t.Fatal(err)
		}
		if got, want := b.NextAnswer(), "$iothub/streams/res/400/?$rid=r1"; got != want {
			t.Fatalf("answer = %q, want %q", got, want)
		}
		if err := r.Reject(); err == nil {
			t.Error("a second answer to one request succeeded")
		}

		// Accept, and bytes go both ways through the bridge.
		b.SendRequest(wire.StreamRequest{Name: "ssh", RID: "r2", URL: url, Token: token}.Topic())
		r = nextRequest(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := r.Accept(ctx)
		if err != nil {
			t.Fatalf("Accept: %v", err)
		}
		defer conn.Close()
		if got, want := b.NextAnswer(), "$iothub/streams/res/200/?$rid=r2"; got != want {
			t.Fatalf("answer = %q, want %q", got, want)
		}
		if !<-bridge.AuthOK {
			t.Fatal("the bridge saw a wrong bearer token")
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		msg := []byte("hello through the tunnel")
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != string(msg) {
			t.Fatalf("echo = %q, want %q", got, msg)
		}
		if strings.Contains(logs.String(), token) {
			t.Errorf("the log holds the stream token:\n%s", logs)
		}
	})
}

func TestAcceptBadBridgeToken(t *testing.T) {
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	c, _ := mustDial(t, b, key, WebSocket)
	bridge := devicetest.StartBridge(t, "the-right-token", true)
	url := "wss://" + bridge.Addr + wire.BridgePath("hub", "dev1", "ssh", "s1")
	b.SendRequest(wire.StreamRequest{Name: "ssh", RID: "r1", URL: url, Token: "a-wrong-token"}.Topic())
	r := nextRequest(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := r.Accept(ctx)
	if err == nil {
		conn.Close()
		t.Fatal("Accept succeeded with a token the bridge refuses")
	}
	if strings.Contains(err.Error(), "a-wrong-token") {
		t.Errorf("the error holds the token: %v", err)
	}
}

func TestMalformedRequestDropped(t *testing.T) {
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	c, logs := mustDial(t, b, key, TLS)
	// No $url: dropped, and its $auth never reaches the log.
	b.SendRequest("$iothub/streams/POST/ssh/?$rid=bad&$auth=SECRETTOKEN")
	b.SendRequest(wire.StreamRequest{Name: "web", RID: "good", URL: "wss://127.0.0.1:1/bridges/h/dev1/web/1", Token: "t"}.Topic())
	r := nextRequest(t, c)
	if r.RID != "good" {
		t.Fatalf("got request %q, want the well-formed one", r.RID)
	}
	s := logs.String()
	if !strings.Contains(s, "malformed") {
		t.Errorf("no log line for the malformed request:\n%s", s)
	}
	if strings.Contains(s, "SECRETTOKEN") {
		t.Errorf("the log holds a token:\n%s", s)
	}
}

func TestQueueFullRejects(t *testing.T) {
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	c, _ := mustDial(t, b, key, TLS)
	for i := range requestQueue + 1 {
		b.SendRequest(wire.StreamRequest{Name: "ssh", RID: fmt.Sprint("r", i), URL: "wss://127.0.0.1:1/b", Token: "t"}.Topic())
	}
	want := fmt.Sprintf("$iothub/streams/res/429/?$rid=r%d", requestQueue)
	if got := b.NextAnswer(); got != want {
		t.Fatalf("answer = %q, want %q", got, want)
	}
	if r := nextRequest(t, c); r.RID != "r0" {
		t.Fatalf("first queued request = %q, want r0", r.RID)
	}
}

func TestDialErrors(t *testing.T) {
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("bad connection string", func(t *testing.T) {
		for _, cs := range []string{"", "HostName=h;DeviceId=d", "HostName=h;SharedAccessKeyName=service;SharedAccessKey=" + key} {
			_, err := Dial(ctx, cs, Options{})
			if !errors.Is(err, sas.ErrConnectionString) {
				t.Errorf("Dial(%q) = %v, want sas.ErrConnectionString", cs, err)
			}
		}
	})

	forEachTransport(t, func(t *testing.T, tr Transport) {
		t.Run("unauthorized", func(t *testing.T) {
			opts, logs := testOptions(t, b, tr)
			wrong := devicetest.NewKey()
			_, err := Dial(ctx, b.ConnStr(wrong), opts)
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
			t.Log(err)
			if strings.Contains(err.Error()+logs.String(), wrong) {
				t.Error("the key leaked into the error or the log")
			}
		})
		t.Run("untrusted certificate", func(t *testing.T) {
			opts, _ := testOptions(t, b, tr)
			opts.TLSConfig = &tls.Config{RootCAs: x509.NewCertPool()}
			_, err := Dial(ctx, b.ConnStr(key), opts)
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("err = %v, want one about the certificate", err)
			}
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) {
				t.Errorf("err %v does not wrap the verification error", err)
			}
			t.Log(err)
		})
		t.Run("unreachable", func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			dead := ln.Addr().String()
			ln.Close()
			opts, _ := testOptions(t, b, tr)
			opts.MQTTAddress = dead
			_, err = Dial(ctx, "HostName="+dead+";DeviceId=dev1;SharedAccessKey="+key, opts)
			if err == nil || !strings.Contains(err.Error(), "cannot reach") {
				t.Fatalf("err = %v, want 'cannot reach'", err)
			}
			t.Log(err)
		})
	})

	t.Run("cancelled", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(context.Background())
		ccancel()
		opts, _ := testOptions(t, b, TLS)
		if _, err := Dial(cctx, b.ConnStr(key), opts); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}

func TestReconnectAfterBrokerRestart(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		key := devicetest.NewKey()
		b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
		c, _ := mustDial(t, b, key, tr)
		b.NextConnect()

		b.Stop()
		waitFor(t, "Connected() to turn false", func() bool { return !c.Connected() })

		b2 := devicetest.StartHub(t, key, b.TLSAddr, b.HTTPAddr)
		waitFor(t, "Connected() to turn true", c.Connected)
		ci := b2.NextConnect()
		tok, err := sas.ParseToken(ci.Password)
		if err != nil || tok.Verify(key, time.Now()) != nil {
			t.Fatalf("reconnect password does not verify: %v", err)
		}

		b2.SendRequest(wire.StreamRequest{Name: "ssh", RID: "after", URL: "wss://127.0.0.1:1/b", Token: "t"}.Topic())
		if r := nextRequest(t, c); r.RID != "after" {
			t.Fatalf("request = %q, want after", r.RID)
		}
	})
}

func TestClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	opts, _ := testOptions(t, b, WebSocket)
	c, err := Dial(context.Background(), b.ConnStr(key), opts)
	if err != nil {
		t.Fatal(err)
	}
	// A request nobody accepted is rejected by Close.
	b.SendRequest(wire.StreamRequest{Name: "ssh", RID: "queued", URL: "wss://127.0.0.1:1/b", Token: "t"}.Topic())
	waitFor(t, "the request to be queued", func() bool { return len(c.requests) == 1 })
	c.Close()
	if got, want := b.NextAnswer(), "$iothub/streams/res/400/?$rid=queued"; got != want {
		t.Fatalf("answer = %q, want %q", got, want)
	}

	c, err = Dial(context.Background(), b.ConnStr(key), opts)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := c.Accept(context.Background())
		accepted <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, ErrClosed) {
		t.Errorf("pending Accept = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if c.Connected() {
		t.Error("Connected() after Close")
	}
	if _, err := c.Accept(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept after Close = %v, want ErrClosed", err)
	}

	// Close while the client is between reconnect attempts.
	c2, err := Dial(context.Background(), b.ConnStr(key), opts)
	if err != nil {
		t.Fatal(err)
	}
	b.Stop()
	waitFor(t, "Connected() to turn false", func() bool { return !c2.Connected() })
	c2.Close()
}

func TestAcceptContext(t *testing.T) {
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	c, _ := mustDial(t, b, key, TLS)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Accept(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Accept = %v, want context.Canceled", err)
	}
}

func TestBackoff(t *testing.T) {
	const base, capd = time.Second, time.Minute
	top := func(n int64) int64 { return n - 1 }
	bottom := func(int64) int64 { return 0 }
	for n := range 80 {
		want := capd
		if n < 6 { // 1s·2⁶ = 64s > 60s
			want = base << n
		}
		if got := backoff(n, base, capd, top); got != want {
			t.Errorf("backoff(%d) at most = %v, want %v", n, got, want)
		}
		if got := backoff(n, base, capd, bottom); got != 0 {
			t.Errorf("backoff(%d) at least = %v, want 0", n, got)
		}
	}
	// Real randomness: within bounds, and spread out (full jitter).
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := backoff(3, base, capd, rand.Int64N)
		if d < 0 || d > 8*base {
			t.Fatalf("backoff(3) = %v, outside [0, 8s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 900 {
		t.Errorf("only %d distinct delays in 1000: not jittered", len(seen))
	}
	if d := backoff(1<<20, base, capd, rand.Int64N); d < 0 || d > capd {
		t.Errorf("huge attempt: %v, want within [0, cap]", d)
	}
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// testLogger logs to the test's output and to a buffer the test can search.
func testLogger(t testing.TB) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	h := slog.NewTextHandler(io.MultiWriter(t.Output(), buf), &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h), buf
}

// waitFor polls cond until it holds or devicetest.Timeout passes:
// Connected has no event to wait on, so the tests watch it.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(devicetest.Timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
