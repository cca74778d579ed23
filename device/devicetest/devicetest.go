// Package devicetest runs the hub's device-facing half in-process for tests
// of device-side code (the device SDK, the agent): an MQTT broker that
// authenticates devices by SAS token as the hub does, over TLS and over
// WebSocket, and a streaming endpoint stand-in. Only tests import it; it is
// not the hub and shares no code with it, so it checks the wire protocol
// (docs/protocol.md) independently.
package devicetest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// DeviceID is the device every connection string of this package names.
const DeviceID = "dev1"

// Timeout bounds every wait in this package.
const Timeout = 10 * time.Second

type pkiT struct {
	cert tls.Certificate
	pool *x509.CertPool
	pem  []byte
}

// pki is one self-signed certificate for 127.0.0.1, used by every server
// here, and a pool that trusts it.
var pki = sync.OnceValue(func() pkiT {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tether test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return pkiT{
		cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		pool: pool,
		pem:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}
})

// ServerTLS is the servers' TLS configuration.
func ServerTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{pki().cert}, MinVersion: tls.VersionTLS12}
}

// ClientTLS trusts the servers' certificate.
func ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: pki().pool, MinVersion: tls.VersionTLS12}
}

// CAPEM is the servers' certificate in PEM, for a --ca file.
func CAPEM() []byte { return pki().pem }

// NewKey returns a fresh base64 device key.
func NewKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// ConnectInfo is what a device sent in an accepted CONNECT.
type ConnectInfo struct {
	ClientID, Username, Password string
}

// Hub is a mochi-mqtt broker standing in for a hub's device channel: MQTT
// over a TLS listener (TLSAddr) and over WebSocket at
// https://{HTTPAddr}/$iothub/websocket, authenticating devices with SAS
// tokens signed by Key and allowing only the stream topics.
type Hub struct {
	Key      string
	TLSAddr  string
	HTTPAddr string
	// Connects receives every accepted CONNECT (the oldest are dropped when
	// nobody reads them).
	Connects chan ConnectInfo
	// Answers receives the topic of every publish from a device.
	Answers chan string
	// Sessions receives every data session a device opened (session.go;
	// the newest are dropped when nobody reads them).
	Sessions chan *Session

	t        testing.TB
	srv      *mqtt.Server
	ts       *httptest.Server
	handlers sync.WaitGroup // WebSocket handlers, which httptest does not wait for
	tlsLn    *trackListener
	stopped  bool

	smu  sync.Mutex
	sess sessionState
}

// trackListener keeps every connection it accepted, so that Stop can close
// them all: mochi's listener neither serves nor closes a connection it
// accepted while closing, and a device reconnecting into a stopping hub
// would then wait out its whole connect timeout on it.
type trackListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (l *trackListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns[c] = struct{}{}
		l.mu.Unlock()
	}
	return c, err
}

// closeAll closes the listener and every connection it accepted.
func (l *trackListener) closeAll() {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Close()
	}
}

// FreeAddr is a loopback address nothing listens on now, for a hub that
// StartHub starts there later: a device set up before its hub.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// StartHub starts a hub on tlsAddr and httpAddr ("127.0.0.1:0" picks free
// ports; a restart passes the addresses of the hub it replaces). It stops
// when the test ends.
func StartHub(t testing.TB, key, tlsAddr, httpAddr string) *Hub {
	t.Helper()
	h := &Hub{
		Key:      key,
		Connects: make(chan ConnectInfo, 16),
		Answers:  make(chan string, 256),
		Sessions: make(chan *Session, 16),
		t:        t,
		sess:     sessionState{status: http.StatusNotFound, open: make(map[*Session]struct{})},
	}
	h.srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := h.srv.AddHook(&authHook{h: h}, nil); err != nil {
		t.Fatal(err)
	}
	tln, err := net.Listen("tcp", tlsAddr)
	if err != nil {
		t.Fatalf("mqtt listener on %s: %v", tlsAddr, err)
	}
	h.tlsLn = &trackListener{Listener: tls.NewListener(tln, ServerTLS()), conns: make(map[net.Conn]struct{})}
	if err := h.srv.AddListener(listeners.NewNet("tls", h.tlsLn)); err != nil {
		tln.Close()
		t.Fatalf("mqtt listener on %s: %v", tlsAddr, err)
	}
	// Clients that came in over WebSocket belong to this listener, so that
	// srv.Close disconnects them too.
	if err := h.srv.AddListener(wsListener{}); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Serve(); err != nil {
		t.Fatal(err)
	}
	h.TLSAddr = tln.Addr().String()

	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		h.srv.Close()
		t.Fatalf("https listener on %s: %v", httpAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(wire.PathMQTTWebSocket, h.serveWS)
	mux.HandleFunc(wire.PathMuxDevices, h.serveMux)
	h.ts = httptest.NewUnstartedServer(mux)
	h.ts.Listener.Close()
	h.ts.Listener = hl
	h.ts.TLS = ServerTLS()
	h.ts.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests want
	h.ts.StartTLS()
	h.HTTPAddr = hl.Addr().String()
	t.Cleanup(h.Stop)
	return h
}

func (h *Hub) serveWS(w http.ResponseWriter, r *http.Request) {
	h.handlers.Add(1)
	defer h.handlers.Done()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.SubprotocolMQTT}})
	if err != nil {
		return
	}
	if c.Subprotocol() != wire.SubprotocolMQTT {
		c.Close(websocket.StatusPolicyViolation, "mqtt subprotocol required")
		return
	}
	nc := websocket.NetConn(r.Context(), c, websocket.MessageBinary)
	defer nc.Close()
	h.srv.EstablishConnection("ws", nc)
}

// Stop shuts the hub down and waits for its connections to end. It may be
// called more than once.
func (h *Hub) Stop() {
	if h.stopped {
		return
	}
	h.stopped = true
	h.srv.Close()
	h.tlsLn.closeAll()
	h.ts.Close()
	h.closeSessions()
	h.handlers.Wait()
}

// ConnStr is the connection string of device DeviceID with key. Its
// HostName is the HTTPS address, as a hub's would be.
func (h *Hub) ConnStr(key string) string {
	return "HostName=" + h.HTTPAddr + ";DeviceId=" + DeviceID + ";SharedAccessKey=" + key
}

// SendRequest publishes a stream request topic. It reaches every
// subscribed device, which is fine for tests with one device (a real hub
// must write to the one device only).
func (h *Hub) SendRequest(topic string) {
	h.t.Helper()
	if err := h.srv.Publish(topic, nil, false, 0); err != nil {
		h.t.Fatal(err)
	}
}

// DropDevice ends the MQTT connection of clientID, as a hub that lost it.
func (h *Hub) DropDevice(clientID string) {
	h.t.Helper()
	cl, ok := h.srv.Clients.Get(clientID)
	if !ok {
		h.t.Fatalf("device %s is not connected", clientID)
	}
	cl.Stop(errors.New("dropped by the test"))
}

// NextAnswer waits for a device's next publish and returns its topic.
func (h *Hub) NextAnswer() string {
	h.t.Helper()
	select {
	case a := <-h.Answers:
		return a
	case <-time.After(Timeout):
		h.t.Fatal("no answer from the device")
		return ""
	}
}

// NextConnect waits for the next accepted CONNECT.
func (h *Hub) NextConnect() ConnectInfo {
	h.t.Helper()
	select {
	case ci := <-h.Connects:
		return ci
	case <-time.After(Timeout):
		h.t.Fatal("no device connected")
		return ConnectInfo{}
	}
}

type wsListener struct{}

func (wsListener) Init(*slog.Logger) error                { return nil }
func (wsListener) Serve(listeners.EstablishFn)            {}
func (wsListener) ID() string                             { return "ws" }
func (wsListener) Address() string                        { return "" }
func (wsListener) Protocol() string                       { return "ws" }
func (l wsListener) Close(closeClients listeners.CloseFn) { closeClients(l.ID()) }

// authHook checks a device's SAS password as the hub does and allows only
// the stream topics.
type authHook struct {
	mqtt.HookBase
	h *Hub
}

func (a *authHook) ID() string { return "devicetest-auth" }

func (a *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish}, []byte{b})
}

func (a *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	tok, err := sas.ParseToken(string(pk.Connect.Password))
	if err != nil || tok.Verify(a.h.Key, time.Now()) != nil {
		return false
	}
	resource := "/devices/" + cl.ID
	if dev, mod, ok := strings.Cut(cl.ID, "/"); ok {
		resource = "/devices/" + dev + "/modules/" + mod
	}
	if !tok.ResourceIs([]string{"127.0.0.1"}, resource) {
		return false
	}
	select {
	case a.h.Connects <- ConnectInfo{ClientID: cl.ID, Username: string(pk.Connect.Username), Password: string(pk.Connect.Password)}:
	default: // a test that does not read them must not stall the broker
	}
	return true
}

func (a *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return strings.HasPrefix(topic, wire.TopicResponsePrefix)
	}
	return strings.HasPrefix(topic, wire.TopicRequestPrefix) || strings.HasPrefix(topic, wire.TopicResponsePrefix)
}

func (a *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || !strings.HasPrefix(pk.TopicName, wire.TopicResponsePrefix) {
		return pk, nil
	}
	a.h.Answers <- pk.TopicName
	return pk, packets.CodeSuccessIgnore // consumed, never echoed, as the hub does
}

// Bridge stands in for the hub's streaming endpoint: a WebSocket server
// that checks the bearer token and then either echoes every message or
// hands the connection to the test as the service's side of the stream.
type Bridge struct {
	// Addr is host:port; a stream URL is "wss://" + Addr + wire.BridgePath(...).
	Addr string
	// AuthOK receives, per upgrade request, whether its token was right.
	AuthOK chan bool
	// Conns receives the service's side of each stream (not for an echo
	// bridge).
	Conns chan *BridgeConn

	token    string
	echo     bool
	ts       *httptest.Server
	handlers sync.WaitGroup
	quit     chan struct{}
}

// StartBridge starts a bridge that accepts token; echo makes it echo
// instead of handing connections out. It stops when the test ends.
func StartBridge(t testing.TB, token string, echo bool) *Bridge {
	b := &Bridge{
		token: token, echo: echo,
		AuthOK: make(chan bool, 16),
		Conns:  make(chan *BridgeConn, 16),
		quit:   make(chan struct{}),
	}
	b.ts = httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	b.ts.TLS = ServerTLS()
	b.ts.StartTLS()
	b.Addr = b.ts.Listener.Addr().String()
	t.Cleanup(func() {
		close(b.quit)
		b.ts.Close()
		b.handlers.Wait()
	})
	return b
}

func (b *Bridge) serve(w http.ResponseWriter, r *http.Request) {
	b.handlers.Add(1)
	defer b.handlers.Done()
	ok := r.Header.Get("Authorization") == "Bearer "+b.token
	select {
	case b.AuthOK <- ok:
	default:
	}
	if !ok {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	conn, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer conn.Close()
	// Hijacked connections outlive httptest's Close: end this one with the
	// bridge.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-b.quit:
			conn.Close()
		case <-stop:
		}
	}()
	if b.echo {
		for {
			msg, op, err := wsutil.ReadClientData(conn)
			if err != nil {
				return
			}
			if err := wsutil.WriteServerMessage(conn, op, msg); err != nil {
				return
			}
		}
	}
	bc := &BridgeConn{conn: conn, done: make(chan struct{})}
	b.Conns <- bc
	select {
	case <-bc.done:
	case <-b.quit:
	}
}

// NextConn waits for the service's side of the next stream.
func (b *Bridge) NextConn(t testing.TB) *BridgeConn {
	t.Helper()
	select {
	case c := <-b.Conns:
		return c
	case <-time.After(Timeout):
		t.Fatal("nobody joined the bridge")
		return nil
	}
}

// BridgeConn is the service's side of a stream, message by message.
type BridgeConn struct {
	conn net.Conn
	once sync.Once
	done chan struct{}
}

// Send sends p as one binary message.
func (c *BridgeConn) Send(p []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(Timeout))
	return wsutil.WriteServerBinary(c.conn, p)
}

// Recv returns the next data message; io.EOF once the device closed.
func (c *BridgeConn) Recv() ([]byte, error) {
	c.conn.SetReadDeadline(time.Now().Add(Timeout))
	msg, _, err := wsutil.ReadClientData(c.conn)
	var closed wsutil.ClosedError
	if err != nil && (errors.Is(err, io.EOF) || errors.As(err, &closed)) {
		return nil, io.EOF
	}
	return msg, err
}

// Close sends a close frame and ends the connection.
func (c *BridgeConn) Close() {
	c.once.Do(func() {
		c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		wsutil.WriteServerMessage(c.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
		c.conn.Close()
		close(c.done)
	})
}
