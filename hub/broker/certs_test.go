package broker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-io/tether/wire"
)

// TestPeerCertificates: the client certificate of the TLS handshake
// reaches Authenticate over MQTT/TLS and over MQTT/WebSocket, and a client
// without one is still asked about (certs empty), since the listeners only
// request certificates.
func TestPeerCertificates(t *testing.T) {
	var (
		mu  sync.Mutex
		got = map[string][]*x509.Certificate{}
	)
	b, err := New(Options{
		Logger: testLogger(),
		Authenticate: func(clientID, _ string, _ []byte, _ string, certs []*x509.Certificate) (string, error) {
			mu.Lock()
			got[clientID] = certs
			mu.Unlock()
			return "", nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	serverCert, pool := selfSigned(t)
	clientCert, _ := selfSigned(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequestClientCert}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	go b.Serve(ln)

	mux := http.NewServeMux()
	mux.HandleFunc(wire.PathMQTTWebSocket, b.HandleWebSocket)
	ws := httptest.NewUnstartedServer(mux)
	ws.TLS = serverTLS.Clone()
	ws.StartTLS()
	defer ws.Close()
	wsPool := x509.NewCertPool()
	wsPool.AddCert(ws.Certificate())

	for _, c := range []struct {
		id, url string
		roots   *x509.CertPool
		cert    bool
	}{
		{"tls-cert", "tls://" + ln.Addr().String(), pool, true},
		{"ws-cert", "wss://" + strings.TrimPrefix(ws.URL, "https://") + wire.PathMQTTWebSocket, wsPool, true},
		{"tls-none", "tls://" + ln.Addr().String(), pool, false},
		{"ws-none", "wss://" + strings.TrimPrefix(ws.URL, "https://") + wire.PathMQTTWebSocket, wsPool, false},
	} {
		conf := &tls.Config{RootCAs: c.roots}
		if c.cert {
			conf.Certificates = []tls.Certificate{clientCert}
		}
		opts := paho.NewClientOptions().AddBroker(c.url).SetTLSConfig(conf).
			SetClientID(c.id).SetUsername("h/" + c.id + "/").SetProtocolVersion(4).
			SetAutoReconnect(false).SetConnectTimeout(wait)
		cl := paho.NewClient(opts)
		tok := cl.Connect()
		if !tok.WaitTimeout(wait) || tok.Error() != nil {
			t.Fatalf("%s: connect: %v", c.id, tok.Error())
		}
		cl.Disconnect(0)

		mu.Lock()
		certs, asked := got[c.id]
		mu.Unlock()
		switch {
		case !asked:
			t.Errorf("%s: Authenticate not asked", c.id)
		case !c.cert && len(certs) != 0:
			t.Errorf("%s: certs %d, want none", c.id, len(certs))
		case c.cert && (len(certs) != 1 || !bytes.Equal(certs[0].Raw, clientCert.Certificate[0])):
			t.Errorf("%s: Authenticate got %d certificates, not the client's", c.id, len(certs))
		}
	}
}
