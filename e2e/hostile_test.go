package e2e

// Hostile input against a whole hub on loopback: garbage on every port,
// slow handshakes, oversize headers, bodies and messages, floods of stream
// requests, malformed MQTT packets, failed logins. Each test also checks
// that a well-behaved client is not disturbed. docs/security.md cites
// them.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gobwas/ws"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/internal/wstest"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// hostileWait bounds every wait for the hub to cut a bad client.
const hostileWait = 15 * time.Second

// closedWithin reads c until it fails and fails the test unless that
// happens within d: the hub cut the connection (EOF, a reset, a TLS alert).
func closedWithin(t *testing.T, c net.Conn, d time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the hub kept the connection open for %v", what, d)
	}
	return time.Since(start)
}

// streamWorks opens a stream to an echoing device and echoes through it:
// the proof that the hub still serves well-behaved clients.
func streamWorks(t *testing.T, h *testHub, deviceID, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := h.service(t).OpenStream(ctx, deviceID, "echo")
	if err != nil {
		t.Fatalf("a good stream after %s: %v", msg, err)
	}
	defer conn.Close()
	echoOnce(t, conn, msg)
}

// TestGarbageOnEveryPort sends bytes that are no protocol at all to the
// HTTPS port and the MQTT port, before TLS and after it, and to both
// WebSocket endpoints. Each bad connection is cut (HTTPS answers 400
// first); the device connected all along still gets its streams.
func TestGarbageOnEveryPort(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.TLS)
	serveEcho(t, dc)
	garbage := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		bytes.Repeat([]byte{0xff}, 4096),
		{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}, // CONNECT with a malformed length
		make([]byte, 8),
		[]byte("\x16\x03\x01\x00\x05hello"), // a TLS record that is no ClientHello
	}
	for _, port := range []struct{ name, addr string }{{"https", h.Addr}, {"mqtt", h.MQTTAddr}} {
		for i, g := range garbage {
			t.Run(fmt.Sprintf("%s/plain/%d", port.name, i), func(t *testing.T) {
				c, err := net.Dial("tcp", port.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.Write(g)
				closedWithin(t, c, hostileWait, "garbage instead of TLS")
			})
			t.Run(fmt.Sprintf("%s/tls/%d", port.name, i), func(t *testing.T) {
				c, err := tls.Dial("tcp", port.addr, h.TLS)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				// Ended by a blank line, so that HTTPS answers at once
				// rather than wait for the rest of a header.
				c.Write(append(g, "\r\n\r\n"...))
				c.SetReadDeadline(time.Now().Add(hostileWait))
				first, _ := io.ReadAll(io.LimitReader(c, 12))
				if port.name == "https" && !bytes.HasPrefix(first, []byte("HTTP/1.1 4")) && len(first) > 0 {
					t.Fatalf("HTTPS answered garbage with %q", first)
				}
				closedWithin(t, c, hostileWait, "garbage over TLS")
			})
		}
	}

	t.Run("mqtt-websocket", func(t *testing.T) {
		d := ws.Dialer{TLSConfig: h.TLS, Protocols: []string{wire.SubprotocolMQTT}}
		c, _, _, err := d.Dial(context.Background(), "wss://"+h.Addr+wire.PathMQTTWebSocket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ws.WriteFrame(c, ws.MaskFrame(ws.NewBinaryFrame(bytes.Repeat([]byte{0xff}, 64))))
		closedWithin(t, c, hostileWait, "garbage over MQTT/WebSocket")
	})

	t.Run("bridges-path", func(t *testing.T) {
		// An escape no URL parser takes, sent by hand: 400 from net/http.
		c, err := tls.Dial("tcp", h.Addr, h.TLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /bridges/%%zz/d/s/i HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nAuthorization: Bearer x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(hostileWait))
		status, _ := io.ReadAll(io.LimitReader(c, 12))
		if string(status) != "HTTP/1.1 400" {
			t.Errorf("/bridges/%%zz: %q, want 400", status)
		}
		for _, path := range []string{"/bridges/a/b/c/d/e", "/bridges/" + strings.Repeat("a/", 4), "/bridges/h/dev1/echo/NOSUCHSTREAM"} {
			_, err := wsconn.Dial(context.Background(), "wss://"+h.Addr+path, "token", h.TLS)
			if !isStatus(err, 400) && !isStatus(err, 401) {
				t.Errorf("%s: %v, want 400 or 401", path, err)
			}
		}
	})

	t.Run("bridges-frames", func(t *testing.T) {
		// A paired stream whose service side sends bytes that are no
		// WebSocket frame (a reserved opcode): 1002 to it, 1001 to the
		// device, and the stream is over.
		devSide := make(chan net.Conn, 1)
		dev2 := h.connectDevice(t, h.addDevice(t, "dev2"), device.WebSocket)
		go func() {
			req, err := dev2.Accept(context.Background())
			if err != nil {
				close(devSide)
				return
			}
			c, err := req.Accept(context.Background())
			if err != nil {
				close(devSide)
				return
			}
			devSide <- c
		}()
		url, tok := h.openRaw(t, "dev2", "raw")
		d := ws.Dialer{TLSConfig: h.TLS, Header: ws.HandshakeHeaderString("Authorization: Bearer " + tok + "\r\n")}
		c, br, _, err := d.Dial(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		dconn := <-devSide
		if dconn == nil {
			t.Fatal("the device did not join")
		}
		defer dconn.Close()
		c.Write([]byte{0x8f, 0x80, 1, 2, 3, 4}) // FIN, opcode 15, masked, empty
		expectClose(t, c, br, ws.StatusProtocolError)
		closedWithin(t, dconn, hostileWait, "the device side of a broken stream")
	})

	streamWorks(t, h, "dev1", "after garbage")
}

// TestSlowTLSHandshakeIsCut: a client that opens a connection and sends
// nothing, or the start of a ClientHello and then nothing, is cut when the
// handshake limit ends, on both listeners, while a device connects and
// streams at once.
func TestSlowTLSHandshakeIsCut(t *testing.T) {
	t.Parallel()
	const limit = 500 * time.Millisecond
	h := startHub(t, hubOptions{limits: hub.Limits{TLSHandshakeTimeout: limit}})
	var slow []net.Conn
	for _, addr := range []string{h.Addr, h.MQTTAddr} {
		for _, first := range [][]byte{nil, {0x16, 0x03, 0x01}} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(first)
			slow = append(slow, c)
		}
	}
	start := time.Now()
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.TLS)
	serveEcho(t, dc)
	streamWorks(t, h, "dev1", "while others are slow")
	cutAfter(t, slow, start, limit, "slow handshake")
}

// cutAfter checks that the hub closes every one of conns, not before
// about limit has passed since start.
func cutAfter(t *testing.T, conns []net.Conn, start time.Time, limit time.Duration, what string) {
	t.Helper()
	for i, c := range conns {
		closedWithin(t, c, hostileWait, fmt.Sprintf("%s %d", what, i))
		if d := time.Since(start); d < limit/2 {
			t.Fatalf("%s %d cut after %v, before the limit", what, i, d)
		}
	}
}

// TestOversizeHeaderBodyMessage: a header past the limit gets 431, a
// registry body past it 413, and a WebSocket message past it ends its
// stream with close 1009, while another stream goes on.
func TestOversizeHeaderBodyMessage(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{limits: hub.Limits{MaxMessageBytes: 1 << 20}})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS}}

	req, _ := http.NewRequest(http.MethodGet, "https://"+h.Addr+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a 64 KiB header: %d, want 431", resp.StatusCode)
	}

	body := `{"deviceId":"big","tags":"` + strings.Repeat("x", 100<<10) + `"}`
	req, _ = http.NewRequest(http.MethodPut, "https://"+h.Addr+"/devices/big?api-version=2020-09-30", strings.NewReader(body))
	req.Header.Set("Authorization", h.ownerToken(t, time.Hour))
	req.Header.Set("Content-Type", "application/json")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 100 KiB body: %d, want 413", resp.StatusCode)
	}

	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	serveEcho(t, dc)
	good, err := h.service(t).OpenStream(context.Background(), "dev1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	echoOnce(t, good, "before")

	url, tok := h.openRaw(t, "dev1", "big")
	d := ws.Dialer{TLSConfig: h.TLS, Header: ws.HandshakeHeaderString("Authorization: Bearer " + tok + "\r\n")}
	c, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A header announcing 2 MiB; the hub refuses it before any payload.
	ws.WriteHeader(c, ws.Header{OpCode: ws.OpBinary, Fin: true, Masked: true, Length: 2 << 20})
	expectClose(t, c, br, ws.StatusMessageTooBig)
	echoOnce(t, good, "after")
}

// TestStreamRequestFlood: a flood of stream requests past the policy's
// rate gets 429 ThrottlingException with Retry-After, and an open stream
// keeps working through it; past the per-device cap, too.
func TestStreamRequestFlood(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{window: 2 * time.Second, limits: hub.Limits{StreamRatePerPolicy: 20}})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	serveEcho(t, dc)
	good, err := h.service(t).OpenStream(context.Background(), "dev1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()

	const flood, workers = 300, 16
	var (
		wg                 sync.WaitGroup
		next               atomic.Int32
		throttled, granted atomic.Int32
		bad                = make(chan string, flood)
	)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS, MaxIdleConnsPerHost: workers}}
	token := h.ownerToken(t, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= flood && ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+h.Addr+"/twins/dev1/streams/flood?api-version=2020-09-30", nil)
				req.Header.Set("Authorization", token)
				resp, err := client.Do(req)
				if err != nil {
					bad <- err.Error()
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusOK:
					granted.Add(1)
				case resp.StatusCode == http.StatusTooManyRequests:
					code, msg := wire.DecodeError(body)
					if code != wire.CodeThrottled || resp.Header.Get(wire.HeaderErrorCode) != "ThrottlingException" ||
						resp.Header.Get("Retry-After") == "" || !strings.Contains(msg, "Too many") {
						bad <- fmt.Sprintf("429 without Azure's shape: %s %q", resp.Header, body)
					}
					throttled.Add(1)
				default:
					bad <- fmt.Sprintf("HTTP %d %s", resp.StatusCode, body)
				}
			}
		}()
	}
	// The open stream keeps echoing while the flood runs.
	for i := 0; i < 50 && next.Load() < flood; i++ {
		echoOnce(t, good, fmt.Sprintf("during the flood %d", i))
	}
	wg.Wait()
	close(bad)
	for b := range bad {
		t.Error(b)
	}
	if throttled.Load() == 0 || granted.Load() == 0 {
		t.Fatalf("%d granted, %d throttled: want some of each", granted.Load(), throttled.Load())
	}
	t.Logf("%d requests: %d granted, %d throttled", flood, granted.Load(), throttled.Load())
	echoOnce(t, good, "after the flood")

	if got := h.metric(t, "tether_limited_total", `limit="stream_rate_policy"`); got < float64(throttled.Load())-1 {
		t.Fatalf("tether_limited_total{limit=stream_rate_policy} = %v, want about %d", got, throttled.Load())
	}
}

// TestStreamsPerDeviceCap: past its cap of open streams a device's next
// stream gets 429; ending one makes room.
func TestStreamsPerDeviceCap(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{limits: hub.Limits{StreamsPerDevice: 2}})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	serveEcho(t, dc)
	svc := h.service(t)
	var open []net.Conn
	for range 2 {
		c, err := svc.OpenStream(context.Background(), "dev1", "echo")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoOnce(t, c, "open")
		open = append(open, c)
	}
	resp := h.rawCreateStream(t, "dev1", "third", h.ownerToken(t, time.Hour))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, msg := wire.DecodeError(body); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(msg, "this device") {
		t.Fatalf("third stream: %d %s, want 429 naming the device cap", resp.StatusCode, body)
	}
	open[0].Close()
	eventually(t, 10*time.Second, "room for a stream", func() bool {
		c, err := svc.OpenStream(context.Background(), "dev1", "echo")
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	echoOnce(t, open[1], "still open")
}

// metric reads one sample of the hub's metrics, by name and a label
// fragment.
func (h *testHub) metric(t *testing.T, name, label string) float64 {
	t.Helper()
	rec := &responseRecorder{header: http.Header{}}
	h.Server.MetricsHandler().ServeHTTP(rec, httptestRequest())
	for line := range strings.SplitSeq(rec.body.String(), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, label) {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			return v
		}
	}
	t.Fatalf("no %s{%s} in the metrics", name, label)
	return 0
}

type responseRecorder struct {
	header http.Header
	body   bytes.Buffer
}

func (r *responseRecorder) Header() http.Header         { return r.header }
func (r *responseRecorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *responseRecorder) WriteHeader(int)             {}

func httptestRequest() *http.Request {
	req, _ := http.NewRequest(http.MethodGet, "/metrics", nil)
	return req
}

// mqttPacket encodes a CONNECT for a registered device.
func connectPacket(t *testing.T, h *testHub, connStr string) []byte {
	t.Helper()
	return connectPacketAs(t, connStr, "")
}

// connectPacketAs encodes a CONNECT for a registered device that names
// itself clientType in its username (DeviceClientType, as Azure's SDKs and
// Tether's do), or names nothing if it is "".
func connectPacketAs(t *testing.T, connStr, clientType string) []byte {
	t.Helper()
	cs, _ := sas.ParseConnectionString(connStr)
	tok, err := cs.Token(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	username := cs.HostName + "/" + cs.DeviceID + "/?api-version=2020-09-30"
	if clientType != "" {
		username += "&DeviceClientType=" + url.QueryEscape(clientType)
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60,
			ClientIdentifier: cs.DeviceID,
			UsernameFlag:     true, Username: []byte(username),
			PasswordFlag: true, Password: []byte(tok),
		},
	}
	var b bytes.Buffer
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestMalformedMQTTDisconnectsOnlyThatClient: packets that break MQTT
// after a good CONNECT (a bad length, a packet past the size limit, a
// second CONNECT, a reserved packet type, a malformed SUBSCRIBE) cut that
// client only; another device keeps its session and its streams.
func TestMalformedMQTTDisconnectsOnlyThatClient(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.TLS)
	serveEcho(t, dc)
	badStr := h.addDevice(t, "bad")
	connect := connectPacket(t, h, badStr)
	for name, pk := range map[string][]byte{
		"length past the limit": {0x30, 0xff, 0xff, 0xff, 0x7f},
		"malformed length":      {0x30, 0xff, 0xff, 0xff, 0xff, 0x01},
		"second CONNECT":        connect,
		"reserved type":         {0x00, 0x00},
		"SUBSCRIBE no topics":   {0x82, 0x02, 0x00, 0x01},
		"SUBSCRIBE short":       {0x82, 0x05, 0x00, 0x01, 0x00, 0x09, 'a'},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := tls.Dial("tcp", h.MQTTAddr, h.TLS)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(connect)
			ack := make([]byte, 4)
			c.SetReadDeadline(time.Now().Add(hostileWait))
			if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
				t.Fatalf("CONNACK %x, %v", ack, err)
			}
			c.Write(pk)
			closedWithin(t, c, hostileWait, name)
			streamWorks(t, h, "dev1", "after "+name)
		})
	}
}

// dialerFrom dials from a loopback address of its own, so that a test can
// play several sources against the per-source limits.
func dialerFrom(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
}

// connackFrom connects over MQTT/TLS from ip with a password and returns
// the CONNACK code.
func connackFrom(t *testing.T, h *testHub, ip, clientID, password string) byte {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tls://" + h.MQTTAddr).SetClientID(clientID).
		SetUsername(h.Addr + "/" + clientID + "/?api-version=2020-09-30").SetPassword(password).
		SetTLSConfig(h.TLS).SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).
		SetDialer(dialerFrom(ip))
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	tok.WaitTimeout(hostileWait)
	defer c.Disconnect(0)
	if ct, ok := tok.(*mqtt.ConnectToken); ok {
		return ct.ReturnCode()
	}
	return 255
}

// TestAuthFailuresBackOff: after a few failed logins of one device or
// policy from one address, that device or policy is refused there (429,
// CONNACK 3) even with a good token, for a while, while other addresses
// are served; unknown devices and wrong keys get the same answer.
func TestAuthFailuresBackOff(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{limits: hub.Limits{AuthFailures: 3, AuthBackoffMax: 2 * time.Second}})
	devStr := h.addDevice(t, "dev1")
	cs, _ := sas.ParseConnectionString(devStr)
	good, _ := cs.Token(time.Hour)
	wrongKey, _ := sas.New(cs.Resource(), "c29tZSBvdGhlciBrZXkgZW50aXJlbHkgMTIzNDU2Nzg=", "", time.Now().Add(time.Hour))
	unknown, _ := sas.New(cs.HostName+"/devices/nosuch", "c29tZSBvdGhlciBrZXkgZW50aXJlbHkgMTIzNDU2Nzg=", "", time.Now().Add(time.Hour))

	// The same answer for a device that does not exist and a wrong key.
	if a, b := connackFrom(t, h, "127.0.0.3", "nosuch", unknown), connackFrom(t, h, "127.0.0.3", "dev1", wrongKey); a != 5 || b != 5 {
		t.Fatalf("unknown device: CONNACK %d, wrong key: CONNACK %d; want 5 for both", a, b)
	}

	// MQTT from 127.0.0.4: three free failures, a fourth starts the
	// back-off, then even the good token gets CONNACK 3.
	for i := range 4 {
		if code := connackFrom(t, h, "127.0.0.4", "dev1", wrongKey); code != 5 {
			t.Fatalf("failure %d: CONNACK %d, want 5", i, code)
		}
	}
	if code := connackFrom(t, h, "127.0.0.4", "dev1", good); code != 3 {
		t.Fatalf("good token during back-off: CONNACK %d, want 3", code)
	}
	if code := connackFrom(t, h, "127.0.0.1", "dev1", good); code != 0 {
		t.Fatalf("good token from another address: CONNACK %d, want 0", code)
	}

	// REST from 127.0.0.2.
	tr := &http.Transport{TLSClientConfig: h.TLS, DialContext: dialerFrom("127.0.0.2").DialContext}
	client := &http.Client{Transport: tr}
	get := func(token string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, "https://"+h.Addr+"/devices/dev1?api-version=2020-09-30", nil)
		req.Header.Set("Authorization", token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	bad := strings.Replace(h.ownerToken(t, time.Hour), "sig=", "sig=AAAA", 1)
	for i := range 4 {
		if resp := get(bad); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad token %d: %d, want 401", i, resp.StatusCode)
		}
	}
	resp := get(h.ownerToken(t, time.Hour))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" ||
		resp.Header.Get(wire.HeaderErrorCode) != "ThrottlingException" {
		t.Fatalf("good token during back-off: %d %v, want 429 with Retry-After", resp.StatusCode, resp.Header)
	}
	if _, err := h.service(t).GetDevice(context.Background(), "dev1"); err != nil {
		t.Fatalf("another address during the back-off: %v", err)
	}
	// The back-off ends (1 s for the first), and a success resets it.
	eventually(t, 5*time.Second, "the back-off to end", func() bool {
		return get(h.ownerToken(t, time.Hour)).StatusCode == http.StatusOK
	})
	if resp := get(bad); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a failure after a success: %d, want 401 (the count starts again)", resp.StatusCode)
	}
	if got := h.metric(t, "tether_limited_total", `limit="auth_backoff"`); got < 2 {
		t.Fatalf("tether_limited_total{limit=auth_backoff} = %v, want 2 or more", got)
	}
}

// TestMQTTConnectionsPerSource: one address past its connection cap gets
// CONNACK 3; another address connects.
func TestMQTTConnectionsPerSource(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{limits: hub.Limits{MQTTConnsPerSource: 2}})
	var held []net.Conn
	for range 2 {
		c, err := tls.DialWithDialer(dialerFrom("127.0.0.5"), "tcp", h.MQTTAddr, h.TLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c) // past TLS, silent: they count
	}
	cs, _ := sas.ParseConnectionString(h.addDevice(t, "dev1"))
	tok, _ := cs.Token(time.Hour)
	if code := connackFrom(t, h, "127.0.0.5", "dev1", tok); code != 3 {
		t.Fatalf("third connection from one address: CONNACK %d, want 3", code)
	}
	if code := connackFrom(t, h, "127.0.0.6", "dev1", tok); code != 0 {
		t.Fatalf("another address: CONNACK %d, want 0", code)
	}
	for _, c := range held {
		c.Close()
	}
	eventually(t, 10*time.Second, "the address to be under its cap again", func() bool {
		return connackFrom(t, h, "127.0.0.5", "dev1", tok) == 0
	})
}

// TestStalledReaderStallsOnlyItsStream: a service that stops reading its
// stream while the device keeps sending stalls that stream only; 100
// other streams, each with bytes of its own both ways, arrive whole and
// unmixed meanwhile.
func TestStalledReaderStallsOnlyItsStream(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	stalledDev := h.connectDevice(t, h.addDevice(t, "stalled"), device.WebSocket)
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.TLS)
	serveEcho(t, dc)
	svc := h.service(t)

	// The stalled stream: the device writes until the hub stops taking
	// its bytes, the service never reads.
	pushed := make(chan int64, 1)
	go func() {
		req, err := stalledDev.Accept(context.Background())
		if err != nil {
			return
		}
		c, err := req.Accept(context.Background())
		if err != nil {
			return
		}
		defer c.Close()
		var n int64
		chunk := make([]byte, 64<<10)
		for n < 512<<20 {
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			m, err := c.Write(chunk)
			n += int64(m)
			if err != nil {
				break // stalled: the point of the test
			}
		}
		pushed <- n
	}()
	stalled, err := svc.OpenStream(context.Background(), "stalled", "never-read")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()

	const n, size = 100, 256 << 10
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
			// Bytes of this stream only: its number in every 8 bytes,
			// with the offset, so a mixed or shifted byte shows.
			msg := make([]byte, size)
			for off := 0; off < size; off += 8 {
				copy(msg[off:], fmt.Sprintf("%03d%05d", i, off/8%100000))
			}
			go func() {
				for off := 0; off < size; off += 4096 + i { // writes of odd sizes
					conn.Write(msg[off:min(off+4096+i, size)])
				}
			}()
			back := make([]byte, size)
			conn.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := io.ReadFull(conn, back); err != nil {
				errs <- fmt.Errorf("stream %d: %v", i, err)
				return
			}
			if !bytes.Equal(back, msg) {
				errs <- fmt.Errorf("stream %d: bytes differ", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	select {
	case got := <-pushed:
		t.Logf("the stalled stream took %d bytes before it stalled", got)
		if got >= 512<<20 {
			t.Fatal("the hub buffered everything the device sent to a reader that never read")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stalled device's writes never stalled")
	}
	// The stalled stream is still there and still delivers, once read.
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(stalled, make([]byte, 1024)); err != nil {
		t.Fatalf("the stalled stream lost its bytes: %v", err)
	}
}

// TestTokenForAnotherDevice: a device's token opens no session for
// another device, whichever way it is bent: another client id with the
// token as it is, or the device's key signing another device's resource.
// Nor does a device token pass as a service token.
func TestTokenForAnotherDevice(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	aStr := h.addDevice(t, "devA")
	h.addDevice(t, "devB")
	a, _ := sas.ParseConnectionString(aStr)
	tokA, _ := a.Token(time.Hour)
	forB, _ := sas.New(a.HostName+"/devices/devB", a.SharedAccessKey, "", time.Now().Add(time.Hour))
	for name, c := range map[string]struct{ id, tok string }{
		"A's token as B":          {"devB", tokA},
		"A's key, B's resource":   {"devB", forB},
		"B's resource, A's id":    {"devA", forB},
		"A's token, A's module":   {"devA/mod", tokA},
		"A's token, empty client": {"", tokA},
	} {
		if code := connackFrom(t, h, "127.0.0.7", c.id, c.tok); code == 0 {
			t.Errorf("%s: accepted", name)
		}
	}
	if code := connackFrom(t, h, "127.0.0.7", "devA", tokA); code != 0 {
		t.Fatalf("A's own token: CONNACK %d", code)
	}
	resp := h.rawCreateStream(t, "devA", "x", tokA)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a device token on the service API: %d, want 401", resp.StatusCode)
	}
}

// expectClose reads the next frame from a raw WebSocket client (br: what
// the handshake read ahead, or nil) and fails unless it is a close frame
// with code.
func expectClose(t *testing.T, c net.Conn, br *bufio.Reader, code ws.StatusCode) {
	t.Helper()
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	c.SetReadDeadline(time.Now().Add(hostileWait))
	f, err := wstest.ReadFrame(r, ws.MaxControlFramePayloadSize)
	if err != nil || f.Header.OpCode != ws.OpClose {
		t.Fatalf("got %+v, %v; want a close frame", f.Header, err)
	}
	if got, _ := ws.ParseCloseFrameData(f.Payload); got != code {
		t.Fatalf("close %d, want %d", got, code)
	}
}

// TestSlowHTTPHeaderIsCut: a client that finishes its TLS handshake and
// then sends a request's header a piece at a time (slowloris) is cut when
// the header limit ends, while REST calls and streams go on meanwhile.
func TestSlowHTTPHeaderIsCut(t *testing.T) {
	t.Parallel()
	const limit = 500 * time.Millisecond
	h := startHub(t, hubOptions{limits: hub.Limits{HeaderTimeout: limit}})
	var slow []net.Conn
	for _, first := range []string{"", "GET /healthz HTTP/1.1\r\nHost: hub\r\n"} {
		c, err := tls.Dial("tcp", h.Addr, h.TLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, first)
		slow = append(slow, c)
	}
	start := time.Now()
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket)
	serveEcho(t, dc)
	streamWorks(t, h, "dev1", "while others send their headers slowly")
	cutAfter(t, slow, start, limit, "slow header")
}
