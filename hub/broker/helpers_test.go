package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-io/tether/wire"
)

// wait bounds every wait on an event, so a broken test fails instead of
// hanging.
const wait = 10 * time.Second

// selfSigned returns a server certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tether test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// authCall is one call of Options.Authenticate.
type authCall struct {
	clientID, username, password, remote string
}

// events records the OnConnect/OnDisconnect calls in order.
type events struct {
	mu  sync.Mutex
	all []string
	ch  chan string
}

func (e *events) add(ev string) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
	e.ch <- ev
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.all...)
}

// next waits for the next callback and checks it is want.
func (e *events) next(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-e.ch:
		if got != want {
			t.Fatalf("callback %q, want %q", got, want)
		}
	case <-time.After(wait):
		t.Fatalf("no callback, want %q", want)
	}
}

// hub is a broker under test with its TLS listener and its WebSocket
// endpoint.
type hub struct {
	b      *Broker
	tlsURL string // tls://127.0.0.1:port
	wsURL  string // wss://127.0.0.1:port/$iothub/websocket
	tlsCfg *tls.Config
	wsCfg  *tls.Config
	wsSrv  *httptest.Server
	served chan error // Serve's result
	ev     *events

	mu    sync.Mutex
	auths []authCall
}

// password is the SAS token the test hub accepts for clientID.
func password(clientID string) string { return "SharedAccessSignature sr=" + clientID + "&sig=ok" }

// credential is what the test hub's Authenticate says a client proved.
func credential(clientID string) string { return "key of " + clientID }

// startHub runs a broker with a real loopback TLS listener and an
// httptest TLS server for WebSocket, and is ready when it returns.
func startHub(t *testing.T) *hub {
	t.Helper()
	h := &hub{served: make(chan error, 1), ev: &events{ch: make(chan string, 64)}}
	b, err := New(Options{
		Logger: testLogger(),
		Authenticate: func(clientID, username string, pw []byte, remote string, _ []*x509.Certificate) (string, error) {
			h.mu.Lock()
			h.auths = append(h.auths, authCall{clientID, username, string(pw), remote})
			h.mu.Unlock()
			if string(pw) != password(clientID) {
				return "", errors.New("bad token")
			}
			return credential(clientID), nil
		},
		OnConnect:    func(id string) { h.ev.add("connect " + id) },
		OnDisconnect: func(id string) { h.ev.add("disconnect " + id) },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.b = b

	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	go func() { h.served <- b.Serve(ln) }()
	h.tlsURL = "tls://" + ln.Addr().String()
	h.tlsCfg = &tls.Config{RootCAs: pool}

	mux := http.NewServeMux()
	mux.HandleFunc(wire.PathMQTTWebSocket, b.HandleWebSocket)
	h.wsSrv = httptest.NewTLSServer(mux)
	h.wsURL = "wss://" + strings.TrimPrefix(h.wsSrv.URL, "https://") + wire.PathMQTTWebSocket
	wsPool := x509.NewCertPool()
	wsPool.AddCert(h.wsSrv.Certificate())
	h.wsCfg = &tls.Config{RootCAs: wsPool}

	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		h.wsSrv.Close()
		select {
		case err := <-h.served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(wait):
			t.Error("Serve did not return after Close")
		}
	})
	return h
}

func (h *hub) authCalls() []authCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]authCall(nil), h.auths...)
}

// device is a paho client standing in for a device.
type device struct {
	id   string
	c    paho.Client
	reqs chan string // topics received on $iothub/streams/POST/#
	res  chan string // topics received on $iothub/streams/res/#
	lost chan struct{}
}

type dialOpts struct {
	ws       bool
	password string // default: the right one
	will     string // will topic, if any
	noSubs   bool
}

// dial connects a device and subscribes it to both stream filters the
// way the Azure SDKs do.
func (h *hub) dial(t *testing.T, id string, o dialOpts) *device {
	t.Helper()
	d, err := h.tryDial(t, id, o)
	if err != nil {
		t.Fatalf("device %s: connect: %v", id, err)
	}
	return d
}

func (h *hub) tryDial(t *testing.T, id string, o dialOpts) (*device, error) {
	t.Helper()
	d := &device{
		id:   id,
		reqs: make(chan string, 16),
		res:  make(chan string, 16),
		lost: make(chan struct{}),
	}
	if o.password == "" {
		o.password = password(id)
	}
	opts := paho.NewClientOptions().
		SetClientID(id).
		SetUsername("127.0.0.1/" + id + "/?api-version=2020-09-30&DeviceClientType=test").
		SetPassword(o.password).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(wait).
		SetConnectionLostHandler(func(paho.Client, error) { close(d.lost) })
	if o.ws {
		opts.AddBroker(h.wsURL).SetTLSConfig(h.wsCfg)
	} else {
		opts.AddBroker(h.tlsURL).SetTLSConfig(h.tlsCfg)
	}
	if o.will != "" {
		opts.SetWill(o.will, "forged", 0, false)
	}
	d.c = paho.NewClient(opts)
	tok := d.c.Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatalf("device %s: CONNECT timed out", id)
	}
	if err := tok.Error(); err != nil {
		return d, err
	}
	t.Cleanup(func() { d.c.Disconnect(0) })
	if !o.noSubs {
		d.subscribe(t, wire.TopicRequestFilter, d.reqs)
		d.subscribe(t, wire.TopicResponseFilter, d.res)
	}
	return d, nil
}

// subscribe subscribes to filter and returns the SUBACK code.
func (d *device) subscribe(t *testing.T, filter string, to chan string) byte {
	t.Helper()
	tok := d.c.Subscribe(filter, 0, func(_ paho.Client, m paho.Message) { to <- m.Topic() })
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device %s: subscribe %s: %v", d.id, filter, tok.Error())
	}
	// paho keys the result by the filter without a $share/{group}/ prefix.
	res := tok.(*paho.SubscribeToken).Result()
	if len(res) != 1 {
		t.Fatalf("device %s: subscribe %s: results %v", d.id, filter, res)
	}
	for _, code := range res {
		return code
	}
	return 0
}

// publish publishes an empty payload and, for QoS 1, waits for the PUBACK.
func (d *device) publish(t *testing.T, topic string, qos byte) {
	t.Helper()
	tok := d.c.Publish(topic, qos, false, []byte{})
	if !tok.WaitTimeout(wait) {
		t.Fatalf("device %s: publish %s (QoS %d): no completion", d.id, topic, qos)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("device %s: publish %s: %v", d.id, topic, err)
	}
}

// nextRequest waits for the next stream request topic.
func (d *device) nextRequest(t *testing.T) string {
	t.Helper()
	select {
	case topic := <-d.reqs:
		return topic
	case <-time.After(wait):
		t.Fatalf("device %s: no stream request", d.id)
		return ""
	}
}

func (d *device) waitLost(t *testing.T) {
	t.Helper()
	select {
	case <-d.lost:
	case <-time.After(wait):
		t.Fatalf("device %s: connection not dropped", d.id)
	}
}

// testLogger logs at Debug to stderr with -v, else nowhere.
func testLogger() *slog.Logger {
	if !testingVerbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testingVerbose() bool { return testing.Verbose() && os.Getenv("BROKER_LOG") != "" }
