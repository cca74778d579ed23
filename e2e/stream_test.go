package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// TestBulkBothWays pushes 64 MiB each way at once through one stream and
// checks both arrive whole, over both device transports.
func TestBulkBothWays(t *testing.T) {
	t.Parallel()
	for _, tr := range []struct {
		name string
		tr   device.Transport
	}{{"websocket", device.WebSocket}, {"tls", device.TLS}} {
		t.Run(tr.name, func(t *testing.T) {
			h := startHub(t, hubOptions{})
			dc := h.connectDevice(t, h.addDevice(t, "dev1"), tr.tr)
			const size = 64 << 20
			toDevice, toService := randomBytes(t, size), randomBytes(t, size)

			got := make(chan [32]byte, 1)
			go func() {
				req, err := dc.Accept(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if req.Name != "bulk" {
					t.Errorf("stream name %q", req.Name)
				}
				conn, err := req.Accept(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				// Closed once both directions are done: a Close while the
				// write is still going would cut it (its close frame's
				// deadline ends the write).
				wrote := make(chan struct{})
				defer func() {
					<-wrote
					conn.Close()
				}()
				go func() {
					defer close(wrote)
					if _, err := conn.Write(toService); err != nil {
						t.Errorf("device write: %v", err)
					}
				}()
				sum := sha256.New()
				if _, err := io.CopyN(sum, conn, size); err != nil {
					t.Errorf("device read: %v", err)
				}
				got <- [32]byte(sum.Sum(nil))
			}()

			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			conn, err := h.service(t).OpenStream(ctx, "dev1", "bulk")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go func() {
				if _, err := conn.Write(toDevice); err != nil {
					t.Errorf("service write: %v", err)
				}
			}()
			sum := sha256.New()
			if _, err := io.CopyN(sum, conn, size); err != nil {
				t.Fatalf("service read: %v", err)
			}
			if [32]byte(sum.Sum(nil)) != sha256.Sum256(toService) {
				t.Fatal("device → service bytes differ")
			}
			if <-got != sha256.Sum256(toDevice) {
				t.Fatal("service → device bytes differ")
			}
		})
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRejected(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	go func() {
		req, err := dc.Accept(context.Background())
		if err == nil {
			_ = req.Reject()
		}
	}()
	_, err := h.service(t).OpenStream(context.Background(), "dev1", "nope")
	if !errors.Is(err, service.ErrRejected) {
		t.Fatalf("OpenStream = %v, want ErrRejected", err)
	}
}

func TestOfflineAndUnknownDevice(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	h.addDevice(t, "dev1")
	svc := h.service(t)
	if _, err := svc.OpenStream(context.Background(), "dev1", "ssh"); !errors.Is(err, service.ErrDeviceOffline) {
		t.Fatalf("offline: %v", err)
	}
	if _, err := svc.OpenStream(context.Background(), "ghost", "ssh"); !errors.Is(err, service.ErrDeviceNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	// Exact Azure shapes: status, iothub-errorcode, nested error code.
	for id, want := range map[string]struct {
		status int
		code   int
	}{"dev1": {404, wire.CodeNotOnline}, "ghost": {404, wire.CodeDeviceNotFound}} {
		resp := h.rawCreateStream(t, id, "ssh", h.ownerToken(t, time.Hour))
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		code, _ := wire.DecodeError(body)
		if resp.StatusCode != want.status || code != want.code || resp.Header.Get(wire.HeaderErrorCode) != wire.CodeName(want.code) {
			t.Errorf("%s: %d %s %d", id, resp.StatusCode, resp.Header.Get(wire.HeaderErrorCode), code)
		}
	}
}

// ownerToken signs a service token with the owner policy.
func (h *testHub) ownerToken(t *testing.T, ttl time.Duration) string {
	t.Helper()
	cs, err := sas.ParseConnectionString(h.Owner)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.New(cs.HostName, cs.SharedAccessKey, cs.SharedAccessKeyName, time.Now().Add(ttl))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawCreateStream makes the service REST call by hand, as an Azure SDK
// would.
func (h *testHub) rawCreateStream(t *testing.T, deviceID, name, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "https://"+h.Addr+"/twins/"+deviceID+"/streams/"+name+"?api-version=2020-09-30", nil)
	req.Header.Set("Authorization", token)
	req.Header.Set(wire.HeaderConnectTimeout, "60")
	req.Header.Set(wire.HeaderResponseTimeout, "10")
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestBadAndExpiredSAS(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	devStr := h.addDevice(t, "dev1")
	h.connectDevice(t, devStr, device.WebSocket)

	expired := h.ownerToken(t, -time.Minute)
	wrongKey := strings.Replace(h.ownerToken(t, time.Hour), "sig=", "sig=AAAA", 1)
	cs, _ := sas.ParseConnectionString(h.Owner)
	forged, _ := sas.New(cs.HostName, "c29tZSBvdGhlciBrZXkgZW50aXJlbHkgMTIzNDU2Nzg=", cs.SharedAccessKeyName, time.Now().Add(time.Hour))
	otherHost, _ := sas.New("evil.example", cs.SharedAccessKey, cs.SharedAccessKeyName, time.Now().Add(time.Hour))
	for name, tok := range map[string]string{
		"expired": expired, "garbled": wrongKey, "wrong key": forged, "other host": otherHost, "none": "",
	} {
		resp := h.rawCreateStream(t, "dev1", "ssh", tok)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get(wire.HeaderErrorCode) != "IotHubUnauthorizedAccess" {
			t.Errorf("%s token: %d %q", name, resp.StatusCode, resp.Header.Get(wire.HeaderErrorCode))
		}
	}
	// The SDK maps it to ErrUnauthorized.
	bad := sas.ConnectionString{HostName: cs.HostName, SharedAccessKeyName: cs.SharedAccessKeyName, SharedAccessKey: "c29tZSBvdGhlciBrZXkgZW50aXJlbHkgMTIzNDU2Nzg="}
	svc, err := service.New(bad.String(), svcOptions(service.Options{TLSConfig: h.TLS}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.OpenStream(context.Background(), "dev1", "ssh"); !errors.Is(err, service.ErrUnauthorized) {
		t.Fatalf("SDK with a wrong key: %v", err)
	}
	// A policy without ServiceConnect cannot open streams.
	ctx := context.Background()
	ro, err := h.Registry.Policy(ctx, "registryRead")
	if err != nil {
		t.Fatal(err)
	}
	roStr := sas.ConnectionString{HostName: cs.HostName, SharedAccessKeyName: ro.Name, SharedAccessKey: ro.PrimaryKey}.String()
	roSvc, _ := service.New(roStr, svcOptions(service.Options{TLSConfig: h.TLS}))
	if _, err := roSvc.OpenStream(ctx, "dev1", "ssh"); !errors.Is(err, service.ErrUnauthorized) {
		t.Fatalf("registryRead policy opening a stream: %v", err)
	}
	if _, err := roSvc.GetDevice(ctx, "dev1"); err != nil {
		t.Fatalf("registryRead policy reading the registry: %v", err)
	}

	// Devices: a wrong key or an expired token is refused at CONNECT.
	dcs, _ := sas.ParseConnectionString(devStr)
	dcs.SharedAccessKey = "c29tZSBvdGhlciBrZXkgZW50aXJlbHkgMTIzNDU2Nzg="
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := device.Dial(dctx, dcs.String(), devOptions(device.Options{TLSConfig: h.TLS})); !errors.Is(err, device.ErrUnauthorized) {
		t.Fatalf("device with a wrong key: %v", err)
	}
	devTok, _ := sas.New(dcs.Resource(), mustKey(t, devStr), "", time.Now().Add(-time.Minute))
	if code := rawMQTTConnect(t, h, "dev1", devTok); code == 0 {
		t.Fatal("an expired device token was accepted")
	}
}

func mustKey(t *testing.T, connStr string) string {
	cs, err := sas.ParseConnectionString(connStr)
	if err != nil {
		t.Fatal(err)
	}
	return cs.SharedAccessKey
}

// rawMQTTConnect connects a plain MQTT client over TLS and returns the
// CONNACK code (0 accepted).
func rawMQTTConnect(t *testing.T, h *testHub, clientID, password string) byte {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tls://" + h.MQTTAddr).SetClientID(clientID).
		SetUsername(h.Addr + "/" + clientID + "/?api-version=2020-09-30").SetPassword(password).
		SetTLSConfig(h.TLS).SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	tok.WaitTimeout(10 * time.Second)
	defer c.Disconnect(0)
	if ct, ok := tok.(*mqtt.ConnectToken); ok {
		return ct.ReturnCode()
	}
	return 255
}

// openRaw makes the REST call and returns the stream's URL and service
// token, as an Azure service SDK would see them.
func (h *testHub) openRaw(t *testing.T, deviceID, name string) (url, token string) {
	t.Helper()
	resp := h.rawCreateStream(t, deviceID, name, h.ownerToken(t, time.Hour))
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get(wire.HeaderIsAccepted) != "True" {
		t.Fatalf("create stream: %d accepted=%q", resp.StatusCode, resp.Header.Get(wire.HeaderIsAccepted))
	}
	return resp.Header.Get(wire.HeaderURL), resp.Header.Get(wire.HeaderAuthToken)
}

func TestStreamTokens(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	a := h.connectDevice(t, h.addDevice(t, "devA"), device.WebSocket)
	b := h.connectDevice(t, h.addDevice(t, "devB"), device.WebSocket)
	serveEcho(t, a)
	serveEcho(t, b)
	ctx := context.Background()

	urlA, tokA := h.openRaw(t, "devA", "echo")
	urlB, tokB := h.openRaw(t, "devB", "echo")
	if tokA == tokB || urlA == urlB {
		t.Fatal("two streams share a token or URL")
	}

	// A's token on B's stream: refused, and it does not spend B's stream.
	if _, err := wsconn.Dial(ctx, urlB, tokA, h.TLS); !isStatus(err, 401) {
		t.Fatalf("A's token on B's stream: %v", err)
	}
	connB, err := wsconn.Dial(ctx, urlB, tokB, h.TLS)
	if err != nil {
		t.Fatalf("B's own token after the attempt: %v", err)
	}
	echoOnce(t, connB, "hello B")
	connB.Close()

	// A token used twice: the second time is refused.
	connA, err := wsconn.Dial(ctx, urlA, tokA, h.TLS)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, connA, "hello A")
	if _, err := wsconn.Dial(ctx, urlA, tokA, h.TLS); !isStatus(err, 401) {
		t.Fatalf("token used twice: %v", err)
	}
	echoOnce(t, connA, "still fine")
	connA.Close()
}

func isStatus(err error, code int) bool {
	var he *wsconn.HandshakeError
	return errors.As(err, &he) && he.StatusCode == code
}

func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q %v", buf, err)
	}
}

// TestSideNeverArrives: the device accepts but never connects; the service
// side is closed when the window ends, and told why.
func TestSideNeverArrives(t *testing.T) {
	// Not parallel: it bounds how long the hub takes to close a stream,
	// which other tests sharing the CPUs would stretch.
	h := startHub(t, hubOptions{window: 300 * time.Millisecond})
	// The SDK always joins on Accept, so this device is a bare MQTT client
	// that answers 200 and stops there.
	devStr := h.addDevice(t, "dev2")
	stop := rawDeviceAnswering(t, h, devStr, 200)
	defer stop()

	start := time.Now()
	conn, err := h.service(t).OpenStream(context.Background(), "dev2", "ssh")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	if err == nil {
		t.Fatal("read data from a stream whose device never came")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("service side closed after %v, window 300ms", d)
	}
	if !strings.Contains(err.Error(), "window") && !errors.Is(err, io.EOF) {
		t.Logf("close error: %v", err)
	}
}

// TestServiceNeverArrives: the service gets its answer but never joins;
// the device side is closed when the window ends.
func TestServiceNeverArrives(t *testing.T) {
	// Not parallel: it bounds how long the hub takes to close a stream,
	// which other tests sharing the CPUs would stretch.
	h := startHub(t, hubOptions{window: 300 * time.Millisecond})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	devErr := make(chan error, 1)
	go func() {
		req, err := dc.Accept(context.Background())
		if err != nil {
			devErr <- err
			return
		}
		conn, err := req.Accept(context.Background())
		if err != nil {
			devErr <- err
			return
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		devErr <- err
	}()
	start := time.Now()
	h.openRaw(t, "dev1", "ssh") // and never dial
	if err := <-devErr; err == nil {
		t.Fatal("device read data from a stream the service never joined")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the hub did not close the device side at the end of the window")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("device side closed after %v, window 300ms", d)
	}
}

// rawDeviceAnswering connects a bare MQTT device that answers every
// stream request with status (0: never answers) and never joins a stream.
func rawDeviceAnswering(t *testing.T, h *testHub, connStr string, status int) (stop func()) {
	t.Helper()
	cs, _ := sas.ParseConnectionString(connStr)
	tok, err := cs.Token(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	opts := mqtt.NewClientOptions().AddBroker("tls://" + h.MQTTAddr).SetClientID(cs.DeviceID).
		SetUsername(cs.HostName + "/" + cs.DeviceID + "/?api-version=2020-09-30").SetPassword(tok).
		SetTLSConfig(h.TLS).SetAutoReconnect(false).SetProtocolVersion(4)
	c := mqtt.NewClient(opts)
	if tk := c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("raw device connect: %v", tk.Error())
	}
	sub := c.Subscribe(wire.TopicRequestFilter, 0, func(c mqtt.Client, m mqtt.Message) {
		r, err := wire.ParseStreamRequest(m.Topic())
		if err != nil {
			t.Errorf("raw device got a malformed request %q: %v", m.Topic(), err)
			return
		}
		if status == 0 {
			return // a device that never answers
		}
		c.Publish(wire.ResponseTopic(status, r.RID), 1, false, []byte{})
	})
	if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
		t.Fatalf("raw device subscribe: %v", sub.Error())
	}
	return func() { c.Disconnect(0) }
}

// TestResponseNeverEchoed: a device's res publish is consumed by the hub,
// never delivered back to it (the C SDK breaks on the echo).
func TestResponseNeverEchoed(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	cs, _ := sas.ParseConnectionString(h.addDevice(t, "dev1"))
	tok, _ := cs.Token(time.Hour)
	var mu sync.Mutex
	var echoed []string
	requests := make(chan string, 4)
	opts := mqtt.NewClientOptions().AddBroker("tls://" + h.MQTTAddr).SetClientID("dev1").
		SetUsername(cs.HostName + "/dev1/?api-version=2020-09-30").SetPassword(tok).
		SetTLSConfig(h.TLS).SetAutoReconnect(false).SetProtocolVersion(4)
	c := mqtt.NewClient(opts)
	if tk := c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatal(tk.Error())
	}
	defer c.Disconnect(0)
	c.Subscribe(wire.TopicResponseFilter, 0, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		echoed = append(echoed, m.Topic())
		mu.Unlock()
	}).Wait()
	c.Subscribe(wire.TopicRequestFilter, 0, func(c mqtt.Client, m mqtt.Message) {
		r, _ := wire.ParseStreamRequest(m.Topic())
		c.Publish(wire.ResponseTopic(400, r.RID), 1, false, []byte{}).Wait()
		requests <- r.RID
	}).Wait()

	for range 3 {
		if _, err := h.service(t).OpenStream(context.Background(), "dev1", "ssh"); !errors.Is(err, service.ErrRejected) {
			t.Fatalf("OpenStream: %v", err)
		}
	}
	// A round trip after the answers: anything echoed would have arrived
	// before this request, on the same ordered connection.
	stop := make(chan struct{})
	go func() {
		_, _ = h.service(t).OpenStream(context.Background(), "dev1", "last")
		close(stop)
	}()
	<-stop
	mu.Lock()
	defer mu.Unlock()
	if len(echoed) != 0 {
		t.Fatalf("the hub echoed the device's answers back: %v", echoed)
	}
}

// TestCloseSeenPromptly: either side closing ends the other within 1 s.
func TestCloseSeenPromptly(t *testing.T) {
	// Not parallel: it bounds how long a close takes to cross,
	// which other tests sharing the CPUs would stretch.
	h := startHub(t, hubOptions{})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	for _, closer := range []string{"service", "device"} {
		t.Run(closer+" closes", func(t *testing.T) {
			devConn := make(chan net.Conn, 1)
			go func() {
				req, err := dc.Accept(context.Background())
				if err != nil {
					return
				}
				c, err := req.Accept(context.Background())
				if err != nil {
					t.Error(err)
					close(devConn)
					return
				}
				devConn <- c
			}()
			svcConn, err := h.service(t).OpenStream(context.Background(), "dev1", "x")
			if err != nil {
				t.Fatal(err)
			}
			dConn := <-devConn
			if dConn == nil {
				t.FailNow()
			}
			// Prove the stream is joined before closing.
			go io.Copy(dConn, dConn)
			echoOnce(t, svcConn, "ping")
			a, b := svcConn, dConn
			if closer == "device" {
				a, b = dConn, svcConn
			}
			start := time.Now()
			a.Close()
			b.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = b.Read(make([]byte, 16))
			if err == nil {
				t.Fatal("read data after the peer closed")
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("other side saw the close after %v", d)
			}
			b.Close()
		})
	}
}

func TestManyConcurrentStreams(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	serveEcho(t, dc)
	svc := h.service(t)
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn, err := svc.OpenStream(ctx, "dev1", "echo")
			if err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
				return
			}
			defer conn.Close()
			msg := bytes.Repeat([]byte{byte(i)}, 64<<10)
			msg = append(msg, fmt.Sprintf("stream %d", i)...)
			go conn.Write(msg)
			back := make([]byte, len(msg))
			conn.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := io.ReadFull(conn, back); err != nil || !bytes.Equal(back, msg) {
				errs <- fmt.Errorf("stream %d: echo differs (%v)", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRestartKeepsRegistry: devices and keys survive a hub restart, and a
// device reconnects with its old connection string.
func TestRestartKeepsRegistry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := startHub(t, hubOptions{dir: dir})
	devStr := h.addDevice(t, "dev1")
	before, err := h.service(t).GetDevice(context.Background(), "dev1")
	if err != nil {
		t.Fatal(err)
	}
	owner := h.Owner
	h.Close()

	h2 := startHub(t, hubOptions{dir: dir})
	cs, _ := sas.ParseConnectionString(owner)
	cs2, _ := sas.ParseConnectionString(h2.Owner)
	if cs.SharedAccessKey != cs2.SharedAccessKey {
		t.Fatal("the owner key changed across a restart")
	}
	after, err := h2.service(t).GetDevice(context.Background(), "dev1")
	if err != nil {
		t.Fatal(err)
	}
	if after.Authentication.SymmetricKey.PrimaryKey != before.Authentication.SymmetricKey.PrimaryKey || after.GenerationID != before.GenerationID {
		t.Fatal("the device's keys changed across a restart")
	}
	// The old connection string names the old port; point it at the new one.
	dcs, _ := sas.ParseConnectionString(devStr)
	dcs.HostName = h2.Addr
	dc := h2.connectDevice(t, dcs.String(), device.WebSocket)
	serveEcho(t, dc)
	conn, err := h2.service(t).OpenStream(context.Background(), "dev1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, conn, "after restart")
	conn.Close()
}

// TestDeviceSeesOnlyItsOwnRequests: a second device never receives the
// first one's stream request (and with it the stream token).
func TestDeviceSeesOnlyItsOwnRequests(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	a := h.connectDevice(t, h.addDevice(t, "devA"), device.WebSocket)
	b := h.connectDevice(t, h.addDevice(t, "devB"), device.TLS)
	serveEcho(t, a)
	bReq := make(chan string, 4)
	go func() {
		for {
			req, err := b.Accept(context.Background())
			if err != nil {
				return
			}
			bReq <- req.Name
			_ = req.Reject()
		}
	}()
	svc := h.service(t)
	conn, err := svc.OpenStream(context.Background(), "devA", "for-a")
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, conn, "a")
	conn.Close()
	// B's first request must be its own.
	if _, err := svc.OpenStream(context.Background(), "devB", "for-b"); !errors.Is(err, service.ErrRejected) {
		t.Fatal(err)
	}
	if name := <-bReq; name != "for-b" {
		t.Fatalf("device B received %q", name)
	}
}

// TestStreamsReuseConnections: through the SDKs, streams opened one after
// another travel over the same TLS connection on both sides once the
// first ended (tether-stream.v2), so only the first pays a handshake; and
// each still carries its own bytes.
func TestStreamsReuseConnections(t *testing.T) {
	t.Parallel()
	// Reuse is what streams on connections of their own do: a hub without
	// sessions.
	h := startHub(t, hubOptions{noSessions: true})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.TLS)
	devAddrs := make(chan string, 8)
	// The device's side of a stream is back in its pool once Close
	// returned; a request that came before would rightly take a new
	// connection.
	devClosed := make(chan struct{}, 8)
	go func() {
		for {
			req, err := dc.Accept(context.Background())
			if err != nil {
				return
			}
			conn, err := req.Accept(context.Background())
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			devAddrs <- conn.LocalAddr().String()
			io.Copy(conn, conn)
			conn.Close()
			devClosed <- struct{}{}
		}
	}()
	svc := h.service(t)
	var svcAddr, devAddr string
	for i := range 4 {
		conn, err := svc.OpenStream(context.Background(), "dev1", "echo")
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("stream %d", i)
		conn.Write([]byte(msg))
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != msg {
			t.Fatalf("stream %d echoed %q, %v", i, got, err)
		}
		conn.Close()
		d := <-devAddrs
		<-devClosed
		if i == 0 {
			svcAddr, devAddr = conn.LocalAddr().String(), d
		} else if conn.LocalAddr().String() != svcAddr || d != devAddr {
			t.Fatalf("stream %d went over %s / %s, stream 0 over %s / %s: connections not reused",
				i, conn.LocalAddr(), d, svcAddr, devAddr)
		}
	}
}

// TestOneRequestOpening speaks Tether's one-request stream opening by hand
// (docs/protocol.md): a WebSocket upgrade on the stream request's path
// with the service's token. Accepted, it answers 101 with the POST's
// headers but the token, and the connection is the stream; every other
// outcome is the POST's answer, marked as the hub's; and the next opening
// goes over the same connection once the stream ended.
func TestOneRequestOpening(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	go func() {
		for {
			req, err := dc.Accept(context.Background())
			if err != nil {
				return
			}
			if req.Name == "nope" {
				_ = req.Reject()
				continue
			}
			conn, err := req.Accept(context.Background())
			if err != nil {
				continue
			}
			go func() {
				defer conn.Close()
				io.Copy(conn, conn)
			}()
		}
	}()
	h.addDevice(t, "offline")
	pool := wsconn.NewPool()
	defer pool.Close()
	open := func(id, name, token string, extra ...string) (net.Conn, error) {
		hdr := http.Header{"Authorization": {token}}
		for i := 0; i+1 < len(extra); i += 2 {
			hdr.Set(extra[i], extra[i+1])
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return pool.DialHeader(ctx, "wss://"+h.Addr+"/twins/"+id+"/streams/"+name+"?api-version=2020-09-30", hdr, h.TLS)
	}
	tok := h.ownerToken(t, time.Hour)

	var first string
	for i := range 2 {
		conn, err := open("dev1", "echo", tok, wire.HeaderResponseTimeout, "10")
		if err != nil {
			t.Fatalf("opening %d: %v", i, err)
		}
		echoOnce(t, conn, fmt.Sprintf("one request %d", i))
		if i == 0 {
			first = conn.LocalAddr().String()
		} else if conn.LocalAddr().String() != first {
			t.Errorf("the second opening went over %s, the first over %s: not reused", conn.LocalAddr(), first)
		}
		conn.Close()
	}

	for _, tc := range []struct {
		what, id, name, token string
		status, code          int
	}{
		{"a device that rejects", "dev1", "nope", tok, 200, 0},
		{"an offline device", "offline", "echo", tok, 404, wire.CodeNotOnline},
		{"an unknown device", "ghost", "echo", tok, 404, wire.CodeDeviceNotFound},
		{"a bad token", "dev1", "echo", "SharedAccessSignature sr=x&sig=y&se=1&skn=iothubowner", 401, wire.CodeUnauthorized},
	} {
		_, err := open(tc.id, tc.name, tc.token)
		var he *wsconn.HandshakeError
		if !errors.As(err, &he) || he.StatusCode != tc.status || he.Code != tc.code || he.Header.Get(wire.HeaderOneRequest) == "" {
			t.Errorf("%s: %v, want HTTP %d (code %d) marked as the hub's", tc.what, err, tc.status, tc.code)
			continue
		}
		if tc.status == 200 && he.Header.Get(wire.HeaderIsAccepted) != "False" {
			t.Errorf("%s: %s %q, want False", tc.what, wire.HeaderIsAccepted, he.Header.Get(wire.HeaderIsAccepted))
		}
	}

	// A GET on the path that is no upgrade: 400, the device not asked.
	req, _ := http.NewRequest(http.MethodGet, "https://"+h.Addr+"/twins/dev1/streams/echo?api-version=2020-09-30", nil)
	req.Header.Set("Authorization", tok)
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a plain GET: %d, want 400", resp.StatusCode)
	}
}
