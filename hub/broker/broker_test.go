package broker

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/tether-io/tether/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// result is what a RequestStream returned.
type result struct {
	status int
	err    error
}

// request runs RequestStream in the background.
func request(ctx context.Context, b *Broker, clientID string, req wire.StreamRequest) chan result {
	ch := make(chan result, 1)
	go func() {
		st, err := b.RequestStream(ctx, clientID, req)
		ch <- result{st, err}
	}()
	return ch
}

func waitResult(t *testing.T, ch chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(wait):
		t.Fatal("RequestStream did not return")
		return result{}
	}
}

func streamReq(name string) wire.StreamRequest {
	return wire.StreamRequest{
		Name:  name,
		URL:   "wss://127.0.0.1:8443/bridges/hub/dev/" + name + "/s1?x=1&y=2",
		Token: "tok-" + name + "_AbC",
	}
}

// checkRequest checks that topic is exactly req's topic with a fresh, safe
// rid, and returns the rid.
func checkRequest(t *testing.T, topic string, req wire.StreamRequest) string {
	t.Helper()
	got, err := wire.ParseStreamRequest(topic)
	if err != nil {
		t.Fatalf("request topic %q: %v", topic, err)
	}
	if strings.ContainsAny(got.RID, "=&/%+?#") || got.RID == "" {
		t.Fatalf("rid %q is not safe in a topic", got.RID)
	}
	req.RID = got.RID
	if topic != req.Topic() {
		t.Fatalf("topic\n%s\nwant\n%s", topic, req.Topic())
	}
	return got.RID
}

// TestRequestReachesOnlyItsDevice: two devices share the request filter; a
// request for A reaches A with the exact topic and never B, and A's answer
// is neither echoed to A nor delivered to B.
func TestRequestReachesOnlyItsDevice(t *testing.T) {
	h := startHub(t)
	a := h.dial(t, "devA", dialOpts{})
	b := h.dial(t, "devB", dialOpts{ws: true}) // over WebSocket
	ctx := context.Background()

	reqA := streamReq("ssh")
	done := request(ctx, h.b, "devA", reqA)
	rid := checkRequest(t, a.nextRequest(t), reqA)
	a.publish(t, wire.ResponseTopic(200, rid), 0)
	if r := waitResult(t, done); r.err != nil || r.status != 200 {
		t.Fatalf("RequestStream = %d, %v; want 200", r.status, r.err)
	}

	// B's first message is its own request: A's request and A's answer,
	// sent before it on the same broker, never reached B.
	reqB := streamReq("rdp")
	done = request(ctx, h.b, "devB", reqB)
	ridB := checkRequest(t, b.nextRequest(t), reqB)
	if ridB == rid {
		t.Fatal("rid reused")
	}
	b.publish(t, wire.ResponseTopic(400, ridB), 0)
	if r := waitResult(t, done); r.err != nil || r.status != 400 {
		t.Fatalf("RequestStream = %d, %v; want 400", r.status, r.err)
	}

	// A second request to A arrives after A's answer would have been
	// echoed on the same connection, and paho delivers in order.
	reqA2 := streamReq("http")
	done = request(ctx, h.b, "devA", reqA2)
	rid2 := checkRequest(t, a.nextRequest(t), reqA2)
	a.publish(t, wire.ResponseTopic(503, rid2), 0) // any status is passed on
	if r := waitResult(t, done); r.err != nil || r.status != 503 {
		t.Fatalf("RequestStream = %d, %v; want 503", r.status, r.err)
	}
	for _, d := range []*device{a, b} {
		select {
		case topic := <-d.res:
			t.Fatalf("device %s received an answer topic %q", d.id, topic)
		case topic := <-d.reqs:
			t.Fatalf("device %s received an extra request %q", d.id, topic)
		default:
		}
	}
}

// TestQoS1AnswerIsAcked: the C# SDK answers at QoS 1 and waits for PUBACK.
func TestQoS1AnswerIsAcked(t *testing.T) {
	h := startHub(t)
	a := h.dial(t, "devA", dialOpts{ws: true})
	req := streamReq("ssh")
	done := request(context.Background(), h.b, "devA", req)
	rid := checkRequest(t, a.nextRequest(t), req)
	a.publish(t, wire.ResponseTopic(400, rid), 1) // fails without a PUBACK
	if r := waitResult(t, done); r.err != nil || r.status != 400 {
		t.Fatalf("RequestStream = %d, %v; want 400", r.status, r.err)
	}
}

// TestAnswerOnlyFromAskedDevice: B cannot answer A's request, and answers
// to unknown or malformed topics are acked and ignored.
func TestAnswerOnlyFromAskedDevice(t *testing.T) {
	h := startHub(t)
	a := h.dial(t, "devA", dialOpts{})
	b := h.dial(t, "devB", dialOpts{})
	req := streamReq("ssh")
	done := request(context.Background(), h.b, "devA", req)
	rid := checkRequest(t, a.nextRequest(t), req)

	// QoS 1, so each is processed (PUBACK) before A answers.
	b.publish(t, wire.ResponseTopic(200, rid), 1)
	for _, topic := range []string{
		wire.ResponseTopic(200, "no-such-rid"),
		"$iothub/streams/res/",
		"$iothub/streams/res/abc/?$rid=" + rid,
		"$iothub/streams/res/200/?$rid=",
		"$iothub/streams/res/200?$rid=" + rid,
		"$iothub/streams/res/99999999999999999999/?$rid=" + rid,
		"$iothub/streams/res/200/?$rid=" + rid + "&$rid=x/y",
		"$iothub/streams/res/\u00e9/?%zz",
	} {
		a.publish(t, topic, 1)
	}
	select {
	case r := <-done:
		t.Fatalf("request resolved by a foreign or malformed answer: %+v", r)
	default:
	}
	a.publish(t, wire.ResponseTopic(400, rid), 1)
	if r := waitResult(t, done); r.err != nil || r.status != 400 {
		t.Fatalf("RequestStream = %d, %v; want A's 400", r.status, r.err)
	}
	// A late second answer for the same rid is ignored too.
	a.publish(t, wire.ResponseTopic(200, rid), 1)
}

func TestAuthenticate(t *testing.T) {
	h := startHub(t)
	_, err := h.tryDial(t, "devA", dialOpts{password: "SharedAccessSignature sr=devA&sig=wrong"})
	if err == nil {
		t.Fatal("connected with a bad password")
	}
	calls := h.authCalls()
	if len(calls) != 1 {
		t.Fatalf("Authenticate called %d times, want 1", len(calls))
	}
	c := calls[0]
	if c.clientID != "devA" || c.password != "SharedAccessSignature sr=devA&sig=wrong" ||
		c.username != "127.0.0.1/devA/?api-version=2020-09-30&DeviceClientType=test" {
		t.Fatalf("Authenticate saw %+v", c)
	}
	if host, _, err := net.SplitHostPort(c.remote); err != nil || host != "127.0.0.1" {
		t.Fatalf("remote %q", c.remote)
	}

	// The CONNACK code itself: 5, not authorized.
	d := &device{lost: make(chan struct{})}
	opts := paho.NewClientOptions().AddBroker(h.tlsURL).SetTLSConfig(h.tlsCfg).
		SetClientID("devA").SetPassword("nope").SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectTimeout(wait)
	d.c = paho.NewClient(opts)
	tok := d.c.Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatal("CONNECT timed out")
	}
	if code := tok.(*paho.ConnectToken).ReturnCode(); code != 5 {
		t.Fatalf("CONNACK %d, want 5", code)
	}

	// No client id: refused without asking Authenticate.
	opts.SetClientID("").SetCleanSession(true).SetPassword(password(""))
	tok = paho.NewClient(opts).Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatal("CONNECT timed out")
	}
	if code := tok.(*paho.ConnectToken).ReturnCode(); code != 5 {
		t.Fatalf("CONNACK %d for an empty client id, want 5", code)
	}
	if n := len(h.authCalls()); n != 2 {
		t.Fatalf("Authenticate called %d times, want 2", n)
	}
	if h.b.Connected("devA") || h.b.Clients() != 0 {
		t.Fatal("a refused device counts as connected")
	}
	if ev := h.ev.list(); len(ev) != 0 {
		t.Fatalf("callbacks for refused devices: %v", ev)
	}

	// The right password gets in, and Authenticate saw it.
	h.dial(t, "devA", dialOpts{ws: true})
	h.ev.next(t, "connect devA")
	calls = h.authCalls()
	if last := calls[len(calls)-1]; last.password != password("devA") || last.clientID != "devA" {
		t.Fatalf("Authenticate saw %+v", last)
	}
}

// TestACL: a device may subscribe only under the two stream filters and
// publish only answers; nothing it publishes reaches another device, not
// even through its last will.
func TestACL(t *testing.T) {
	h := startHub(t)
	a := h.dial(t, "devA", dialOpts{})
	h.ev.next(t, "connect devA")
	b := h.dial(t, "devB", dialOpts{ws: true})
	h.ev.next(t, "connect devB")

	// A third device probes the filters; everything it may read lands in
	// sink, which must stay empty.
	probe := h.dial(t, "probe", dialOpts{noSubs: true})
	h.ev.next(t, "connect probe")
	sink := make(chan string, 16)
	for filter, want := range map[string]byte{
		"#":                                   0x80,
		"+/streams/POST/#":                    0x80,
		"$iothub/#":                           0x80,
		"$iothub/streams/#":                   0x80,
		"$iothub/streams/+/#":                 0x80,
		"$iothub/streams/other/#":             0x80,
		"$iothub/streams/POST":                0x80,
		"$share/g/$iothub/streams/POST/#":     0x80,
		"$SYS/#":                              0x80,
		"devices/devB/messages/devicebound/#": 0x80,
		"$iothub/streams/POST/#":              0,
		"$iothub/streams/res/#":               0,
		"$iothub/streams/POST/ssh/#":          0,
		"$iothub/streams/res/+/#":             0,
	} {
		if got := probe.subscribe(t, filter, sink); got != want {
			t.Errorf("SUBACK for %q = %#x, want %#x", filter, got, want)
		}
	}

	// A forged request, and publishes elsewhere, at QoS 0 (silently
	// dropped).
	a.publish(t, "$iothub/streams/POST/ssh/?$rid=1&$url=wss%3A%2F%2Fevil&$auth=stolen", 0)
	a.publish(t, "devices/devB/messages/devicebound/x", 0)
	a.publish(t, "$iothub/streams/res/200/?$rid=1", 0)

	// A will on the request topic, fired by an unclean disconnect.
	c := h.dial(t, "devC", dialOpts{will: "$iothub/streams/POST/ssh/?$rid=2&$url=wss%3A%2F%2Fevil&$auth=will"})
	h.ev.next(t, "connect devC")
	h.b.Disconnect("devC")
	c.waitLost(t)
	h.ev.next(t, "disconnect devC") // mochi sends a will before this

	// A QoS 1 publish outside the answers disconnects (MQTT 3.1.1 has no
	// negative PUBACK).
	a.c.Publish("$iothub/streams/POST/ssh/?$rid=3&$url=x&$auth=y", 1, false, []byte{})
	a.waitLost(t)
	h.ev.next(t, "disconnect devA")

	req := streamReq("ssh")
	done := request(context.Background(), h.b, "devB", req)
	rid := checkRequest(t, b.nextRequest(t), req)
	b.publish(t, wire.ResponseTopic(200, rid), 0)
	if r := waitResult(t, done); r.err != nil || r.status != 200 {
		t.Fatalf("RequestStream = %d, %v", r.status, r.err)
	}
	select {
	case topic := <-b.res:
		t.Fatalf("devB received %q", topic)
	default:
	}

	// Likewise the probe's first message is its own request.
	done = request(context.Background(), h.b, "probe", req)
	var first string
	select {
	case first = <-sink:
		rid = checkRequest(t, first, req)
	case <-time.After(wait):
		t.Fatal("probe: no stream request")
	}
	probe.publish(t, wire.ResponseTopic(200, rid), 0)
	if r := waitResult(t, done); r.err != nil || r.status != 200 {
		t.Fatalf("RequestStream = %d, %v", r.status, r.err)
	}
	// paho hands a message to every matching route: the request again,
	// once for each overlapping filter, and nothing else.
	for {
		select {
		case topic := <-sink:
			if topic != first {
				t.Fatalf("probe received %q", topic)
			}
			continue
		default:
		}
		break
	}
}

func TestRequestNotConnected(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	if _, err := h.b.RequestStream(ctx, "nobody", streamReq("ssh")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("err = %v, want ErrNotConnected", err)
	}
	h.dial(t, "devA", dialOpts{})
	for _, bad := range []wire.StreamRequest{
		{Name: "", URL: "wss://x", Token: "t"},
		{Name: "a/b", URL: "wss://x", Token: "t"},
		{Name: "a#", URL: "wss://x", Token: "t"},
		{Name: "ssh", URL: "wss://x", Token: "a=b"},
		{Name: "ssh", URL: "wss://x", Token: "a+b/c"},
		{Name: "ssh", URL: "wss://x", Token: ""},
		{Name: "ssh", URL: "", Token: "t"},
	} {
		if _, err := h.b.RequestStream(ctx, "devA", bad); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("RequestStream(%+v) = %v, want ErrInvalidRequest", bad, err)
		}
	}
}

// TestDeviceDropsWhileWaiting: the waiting request fails as soon as the
// session ends, however it ends.
func TestDeviceDropsWhileWaiting(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	for _, how := range []string{"client disconnects", "hub kicks", "takeover"} {
		t.Run(how, func(t *testing.T) {
			a := h.dial(t, "devA", dialOpts{ws: how == "hub kicks"})
			h.ev.next(t, "connect devA")
			req := streamReq("ssh")
			done := request(ctx, h.b, "devA", req)
			checkRequest(t, a.nextRequest(t), req)
			switch how {
			case "client disconnects":
				a.c.Disconnect(0)
				h.ev.next(t, "disconnect devA")
			case "hub kicks":
				h.b.Disconnect("devA")
				h.ev.next(t, "disconnect devA")
			case "takeover":
				a2 := h.dial(t, "devA", dialOpts{})
				h.ev.next(t, "connect devA")
				a.waitLost(t)
				a2.c.Disconnect(0)
				h.ev.next(t, "disconnect devA")
			}
			if r := waitResult(t, done); !errors.Is(r.err, ErrNotConnected) {
				t.Fatalf("RequestStream = %d, %v; want ErrNotConnected", r.status, r.err)
			}
		})
	}
}

func TestRequestTimeout(t *testing.T) {
	h := startHub(t)
	a := h.dial(t, "devA", dialOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req := streamReq("ssh")
	done := request(ctx, h.b, "devA", req)
	checkRequest(t, a.nextRequest(t), req) // and never answers
	if r := waitResult(t, done); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("RequestStream = %d, %v; want DeadlineExceeded", r.status, r.err)
	}
	h.b.mu.Lock()
	n := len(h.b.pending)
	h.b.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d pending requests left", n)
	}
}

// TestCallbacks: OnConnect and OnDisconnect alternate per client id, and a
// session taken over ends without OnDisconnect.
func TestCallbacks(t *testing.T) {
	h := startHub(t)
	a := h.dial(t, "devA", dialOpts{})
	h.ev.next(t, "connect devA")
	if !h.b.Connected("devA") || h.b.Clients() != 1 {
		t.Fatalf("Connected = %v, Clients = %d", h.b.Connected("devA"), h.b.Clients())
	}
	a.c.Disconnect(0)
	h.ev.next(t, "disconnect devA")
	if h.b.Connected("devA") || h.b.Clients() != 0 {
		t.Fatalf("after disconnect: Connected = %v, Clients = %d", h.b.Connected("devA"), h.b.Clients())
	}

	// Takeover: same client id, second connection (the other transport).
	m1 := h.dial(t, "dev/mod", dialOpts{})
	h.ev.next(t, "connect dev/mod")
	m2 := h.dial(t, "dev/mod", dialOpts{ws: true})
	h.ev.next(t, "connect dev/mod")
	m1.waitLost(t)
	if !h.b.Connected("dev/mod") || h.b.Clients() != 1 {
		t.Fatalf("after takeover: Connected = %v, Clients = %d", h.b.Connected("dev/mod"), h.b.Clients())
	}
	// The new session still gets requests.
	req := streamReq("ssh")
	done := request(context.Background(), h.b, "dev/mod", req)
	rid := checkRequest(t, m2.nextRequest(t), req)
	m2.publish(t, wire.ResponseTopic(200, rid), 1)
	if r := waitResult(t, done); r.err != nil || r.status != 200 {
		t.Fatalf("RequestStream = %d, %v", r.status, r.err)
	}
	m2.c.Disconnect(0)
	h.ev.next(t, "disconnect dev/mod")

	// Close waits for every session's goroutine, so any late callback of
	// the taken-over session would be recorded by now.
	if err := h.b.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"connect devA", "disconnect devA",
		"connect dev/mod", "connect dev/mod", "disconnect dev/mod",
	}
	if got := h.ev.list(); !slices.Equal(got, want) {
		t.Fatalf("callbacks\n%q\nwant\n%q", got, want)
	}
}

// TestClose: Close drops TLS and WebSocket devices alike, stops Serve and
// turns new work away.
func TestClose(t *testing.T) {
	h := startHub(t)
	a := h.dial(t, "devA", dialOpts{})
	h.ev.next(t, "connect devA")
	b := h.dial(t, "devB", dialOpts{ws: true})
	h.ev.next(t, "connect devB")
	if n := h.b.Clients(); n != 2 {
		t.Fatalf("Clients = %d, want 2", n)
	}
	req := streamReq("ssh")
	done := request(context.Background(), h.b, "devA", req)
	checkRequest(t, a.nextRequest(t), req)

	if err := h.b.Close(); err != nil {
		t.Fatal(err)
	}
	a.waitLost(t)
	b.waitLost(t)
	if r := waitResult(t, done); !errors.Is(r.err, ErrNotConnected) {
		t.Fatalf("pending RequestStream = %d, %v; want ErrNotConnected", r.status, r.err)
	}
	select {
	case err := <-h.served:
		if err != nil {
			t.Fatalf("Serve = %v, want nil after Close", err)
		}
		h.served <- nil // for the cleanup
	case <-time.After(wait):
		t.Fatal("Serve did not return")
	}
	if n := h.b.Clients(); n != 0 {
		t.Fatalf("Clients = %d after Close", n)
	}
	got := h.ev.list()
	slices.Sort(got[2:])
	if want := []string{"connect devA", "connect devB", "disconnect devA", "disconnect devB"}; !slices.Equal(got, want) {
		t.Fatalf("callbacks %q, want %q", got, want)
	}
	if err := h.b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	if _, err := h.b.RequestStream(context.Background(), "devA", req); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("RequestStream after Close: %v", err)
	}
	c1, c2 := net.Pipe()
	defer c2.Close()
	h.b.ServeConn(c1) // returns at once, closing c1
	if _, err := c2.Write([]byte{0x10}); err == nil {
		t.Fatal("ServeConn after Close left the conn open")
	}
	rec := httptest.NewRecorder()
	h.b.HandleWebSocket(rec, httptest.NewRequest("GET", wire.PathMQTTWebSocket, nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("HandleWebSocket after Close: %d", rec.Code)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.b.Serve(ln); err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Fatal("Serve after Close left the listener open")
	}
}

// TestServeListenerClosed: Serve reports a listener closed under it.
func TestServeListenerClosed(t *testing.T) {
	b, err := New(Options{Authenticate: func(string, string, []byte, string, []*x509.Certificate) (string, error) { return "", nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve(ln) }()
	ln.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve = %v, want net.ErrClosed", err)
		}
	case <-time.After(wait):
		t.Fatal("Serve did not return")
	}
}

func TestWebSocketNeedsMQTTSubprotocol(t *testing.T) {
	h := startHub(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, h.wsSrv.URL+wire.PathMQTTWebSocket, &websocket.DialOptions{HTTPClient: h.wsSrv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	_, _, err = c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
		t.Fatalf("close status %v (%v), want policy violation", got, err)
	}
}

// TestWebSocketSubprotocolAnyCase: subprotocol tokens compare without
// regard to case for MQTT (the Azure C SDK offers "MQTT"), and the hub
// selects the token exactly as offered; the session then works.
func TestWebSocketSubprotocolAnyCase(t *testing.T) {
	h := startHub(t)
	for _, proto := range []string{"mqtt", "MQTT", "Mqtt"} {
		t.Run(proto, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			c, _, err := websocket.Dial(ctx, h.wsSrv.URL+wire.PathMQTTWebSocket, &websocket.DialOptions{
				HTTPClient: h.wsSrv.Client(), Subprotocols: []string{"xmpp", proto},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if got := c.Subprotocol(); got != proto {
				t.Fatalf("selected %q, want %q", got, proto)
			}
			id := "dev-" + proto
			var b bytes.Buffer
			pk := packets.Packet{
				FixedHeader:     packets.FixedHeader{Type: packets.Connect},
				ProtocolVersion: 4,
				Connect: packets.ConnectParams{
					ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: id,
					UsernameFlag: true, Username: []byte("127.0.0.1/" + id + "/?api-version=2020-09-30"),
					PasswordFlag: true, Password: []byte(password(id)),
				},
			}
			if err := pk.ConnectEncode(&b); err != nil {
				t.Fatal(err)
			}
			if err := c.Write(ctx, websocket.MessageBinary, b.Bytes()); err != nil {
				t.Fatal(err)
			}
			_, msg, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(msg) != 4 || msg[0]>>4 != packets.Connack || msg[3] != 0 {
				t.Fatalf("CONNACK % x", msg)
			}
		})
	}
}

// TestNoConnectIsDropped: a connection that never sends CONNECT does not
// hold its goroutine for ever.
func TestNoConnectIsDropped(t *testing.T) {
	b, err := New(Options{Authenticate: func(string, string, []byte, string, []*x509.Certificate) (string, error) { return "", nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.connectTimeout = 50 * time.Millisecond
	c1, c2 := net.Pipe() // net.Pipe honours deadlines
	defer c2.Close()
	served := make(chan struct{})
	go func() { b.ServeConn(c1); close(served) }()
	select {
	case <-served:
	case <-time.After(wait):
		t.Fatal("ServeConn still waiting for CONNECT")
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without Authenticate succeeded")
	}
	auth := func(string, string, []byte, string, []*x509.Certificate) (string, error) { return "", nil }
	if _, err := New(Options{Authenticate: auth, MaxWritesPending: -1}); err == nil {
		t.Error("New with MaxWritesPending -1 succeeded")
	}
	b, err := New(Options{Authenticate: auth})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got := b.srv.Options.Capabilities.MaximumClientWritesPending; got != 64 {
		t.Errorf("MaximumClientWritesPending = %d, want 64", got)
	}
}

// TestDeviceNotReadingIsDropped: a device that subscribed and then stopped
// reading (here over a pipe with no buffer, so the hub's first write to it
// blocks) is dropped once a stream request has waited the write timeout
// to reach it; the request fails as for a device gone, and another device
// gets its requests meanwhile.
func TestDeviceNotReadingIsDropped(t *testing.T) {
	h := startHub(t)
	h.b.writeTimeout = 300 * time.Millisecond
	a := h.dial(t, "devA", dialOpts{})
	h.ev.next(t, "connect devA")

	c, code := rawConnectConn(t, h.b, "devB")
	if code != 0 {
		t.Fatalf("CONNACK %d", code)
	}
	h.ev.next(t, "connect devB")
	sub := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: wire.TopicRequestFilter}},
	}
	var buf bytes.Buffer
	if err := sub.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatalf("write SUBSCRIBE: %v", err)
	}
	ack := make([]byte, 5)
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x90 || ack[4] != 0 {
		t.Fatalf("SUBACK % x, %v", ack, err)
	}
	// devB reads nothing from here on.

	start := time.Now()
	stuck := request(context.Background(), h.b, "devB", streamReq("ssh"))
	req := streamReq("web")
	ok := request(context.Background(), h.b, "devA", req)
	rid := checkRequest(t, a.nextRequest(t), req)
	a.publish(t, wire.ResponseTopic(200, rid), 0)
	if r := waitResult(t, ok); r.err != nil || r.status != 200 {
		t.Fatalf("devA's request while devB is stuck: %d, %v", r.status, r.err)
	}

	h.ev.next(t, "disconnect devB")
	r := waitResult(t, stuck)
	if !errors.Is(r.err, ErrNotConnected) {
		t.Fatalf("request to a device that does not read: %d, %v; want ErrNotConnected", r.status, r.err)
	}
	if d := time.Since(start); d < h.b.writeTimeout/2 {
		t.Fatalf("dropped after %v, before the write timeout", d)
	}
	if h.b.Connected("devB") {
		t.Fatal("devB still connected")
	}
}
