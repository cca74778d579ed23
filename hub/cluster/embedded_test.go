package cluster

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startTrio starts three embedded servers joined as one cluster, each
// given every route address (its own included, as an operator would copy
// one list to every node), and returns once all three answer JetStream.
// routeTLS, when not nil, gives node i's Options.ClusterTLS.
func startTrio(t *testing.T, ctx context.Context, routeTLS func(i int) *tls.Config) []*Cluster {
	t.Helper()
	routes := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	out := make([]*Cluster, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() {
			out[i], errs[i] = Start(ctx, Options{
				DataDir:       t.TempDir(),
				Name:          fmt.Sprintf("n%d", i+1),
				ClusterName:   "trio",
				ClusterListen: routes[i],
				ClusterPeers:  routes,
				ClusterSecret: "s3cret",
				ClusterTLS:    tlsFor(routeTLS, i),
				Logger:        testLogger(t),
			})
		})
	}
	wg.Wait()
	for i, c := range out {
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i+1, errs[i])
		}
	}
	return out
}

func tlsFor(f func(int) *tls.Config, i int) *tls.Config {
	if f == nil {
		return nil
	}
	return f(i)
}

func TestEmbeddedCluster(t *testing.T) {
	t.Run("plain routes", func(t *testing.T) { testTrio(t, nil) })
	t.Run("mutual TLS routes", func(t *testing.T) {
		pki := newRoutePKI(t)
		testTrio(t, func(i int) *tls.Config {
			conf, err := RouteTLS(pki.node(t, fmt.Sprintf("n%d", i+1)))
			if err != nil {
				t.Fatal(err)
			}
			return conf
		})
	})
}

// testTrio checks that three nodes form one JetStream cluster and route
// plain NATS messages.
func testTrio(t *testing.T, routeTLS func(int) *tls.Config) {
	ctx := ctxTimeout(t, 90*time.Second)
	nodes := startTrio(t, ctx, routeTLS)
	for i, c := range nodes {
		if got := c.Replicas(); got != 3 {
			t.Errorf("node %d: Replicas() = %d, want 3", i+1, got)
		}
	}

	// An R3 bucket created on one node is readable on another; creation
	// may have to wait for all three servers to be JetStream peers.
	var kv jetstream.KeyValue
	err := Retry(ctx, testLogger(t), "create an R3 bucket", func(ctx context.Context) error {
		var err error
		kv, err = nodes[0].JetStream().CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "r3", Replicas: 3, Storage: jetstream.FileStorage})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = nodes[0].JetStream().KeyValue(ctx, "r3")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	other, err := nodes[2].JetStream().KeyValue(ctx, "r3")
	if err != nil {
		t.Fatal(err)
	}
	st, err := other.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas != 3 {
		t.Fatalf("bucket has %d replicas, want 3", st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas)
	}
	e, err := other.Get(ctx, "k")
	if err != nil || string(e.Value()) != "v" {
		t.Fatalf("k on node 3: %v, %v", e, err)
	}

	// Plain NATS routing: a request from node 1 reaches a subscriber on
	// node 2.
	sub, err := nodes[1].Conn().Subscribe("ping", func(m *nats.Msg) { _ = m.Respond([]byte("pong")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nodes[1].Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	var reply *nats.Msg
	// Interest travels to node 1 over the route shortly after the flush.
	err = Retry(ctx, nil, "request across nodes", func(ctx context.Context) error {
		var err error
		reply, err = nodes[0].Conn().RequestWithContext(ctx, "ping", nil)
		return err
	})
	if err != nil || string(reply.Data) != "pong" {
		t.Fatalf("request across nodes: %v", err)
	}
}

// lonelyRoute starts a one-node "cluster" whose peer is absent, enough to
// open the route port, and returns a connection to that port. Start waits
// for JetStream, which needs a quorum, so it runs in the background until
// the test ends.
func lonelyRoute(t *testing.T, ctx context.Context, secret string, routeTLS *tls.Config) net.Conn {
	t.Helper()
	route := freeAddr(t)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var c *Cluster
	go func() {
		defer close(done)
		c, _ = Start(sctx, Options{
			DataDir: t.TempDir(), Name: "lonely", ClusterName: "c", ClusterListen: route,
			ClusterPeers: []string{freeAddr(t)}, ClusterSecret: secret, ClusterTLS: routeTLS,
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if c != nil {
			c.Close()
		}
	})
	var conn net.Conn
	err := Retry(ctx, nil, "dial the route port", func(ctx context.Context) error {
		var err error
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", route)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestRouteNeedsSecret speaks the route protocol to a clustered node with
// a wrong password and expects to be refused.
func TestRouteNeedsSecret(t *testing.T) {
	ctx := ctxTimeout(t, 30*time.Second)
	conn := lonelyRoute(t, ctx, "right", nil)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(info, "INFO ") {
		t.Fatalf("route port greeting: %q, %v", info, err)
	}
	fmt.Fprintf(conn, "CONNECT {\"user\":\"tether\",\"pass\":\"wrong\",\"verbose\":false,\"pedantic\":false,\"name\":\"stranger\",\"cluster\":\"c\"}\r\nPING\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("the route port closed without refusing: %v", err)
		}
		if strings.HasPrefix(line, "PONG") {
			t.Fatal("a route with the wrong secret was accepted")
		}
		if strings.Contains(line, "Authorization Violation") {
			return
		}
	}
}

func TestClusterNeedsSecret(t *testing.T) {
	_, err := Start(ctxTimeout(t, 5*time.Second), Options{DataDir: t.TempDir(), ClusterName: "c", ClusterListen: freeAddr(t)})
	if err == nil || !strings.Contains(err.Error(), "secret") {
		t.Fatalf("Start without a cluster secret: %v", err)
	}
}

func TestPeersAndReplicas(t *testing.T) {
	o := Options{ClusterName: "c", ClusterListen: "10.0.0.1:6222", ClusterPeers: []string{"10.0.0.1:6222", " 10.0.0.2:6222", "10.0.0.2:6222", "", "10.0.0.3:6222"}}
	if got := strings.Join(peers(o), ","); got != "10.0.0.2:6222,10.0.0.3:6222" {
		t.Errorf("peers = %q", got)
	}
	if got := replicas(o, nil); got != 3 {
		t.Errorf("replicas of three nodes = %d, want 3", got)
	}
	o.ClusterPeers = o.ClusterPeers[:3]
	if got := replicas(o, nil); got != 1 {
		t.Errorf("replicas of two nodes = %d, want 1", got)
	}
	o.Replicas = 2
	if got := replicas(o, nil); got != 2 {
		t.Errorf("replicas given 2 = %d", got)
	}
	if got := replicas(Options{}, nil); got != 1 {
		t.Errorf("replicas of one node = %d", got)
	}
}

// routePKI is a CA for route certificates, made up for a test.
type routePKI struct {
	dir    string
	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	caFile string
}

func newRoutePKI(t *testing.T) *routePKI {
	t.Helper()
	p := &routePKI{dir: t.TempDir()}
	p.key = newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Tether test route CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.caFile = writePEM(t, p.dir, "ca.pem", "CERTIFICATE", der)
	return p
}

// node issues a route certificate for 127.0.0.1 named name, with
// serverAuth and clientAuth (eku overrides them), and returns the files
// RouteTLS takes.
func (p *routePKI) node(t *testing.T, name string, eku ...x509.ExtKeyUsage) (certFile, keyFile, caFile string) {
	t.Helper()
	if eku == nil {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, p.dir, name+".pem", "CERTIFICATE", der), writePEM(t, p.dir, name+"-key.pem", "PRIVATE KEY", keyDER), p.caFile
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRouteNeedsNodeCertificate opens a TLS route to a node whose routes
// are in mutual TLS: without a certificate, or with one another CA
// signed, the node ends the handshake before a word of the route
// protocol (its INFO, which a route's TLS precedes).
func TestRouteNeedsNodeCertificate(t *testing.T) {
	ctx := ctxTimeout(t, 30*time.Second)
	pki := newRoutePKI(t)
	conf, err := RouteTLS(pki.node(t, "lonely"))
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := RouteTLS(newRoutePKI(t).node(t, "stranger"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no certificate", nil},
		{"a certificate of another CA", stranger.Certificates},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := lonelyRoute(t, ctx, "s3cret", conf)
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			// With TLS on, a route starts with the handshake.
			tc := tls.Client(conn, &tls.Config{RootCAs: conf.RootCAs, ServerName: "127.0.0.1", Certificates: tc.certs, MinVersion: tls.VersionTLS13})
			err = tc.Handshake()
			if err == nil {
				// TLS 1.3: the server judges the client's certificate
				// after the client's side of the handshake is done; its
				// verdict is the next thing to read.
				_, err = tc.Read(make([]byte, 1))
			}
			var ne net.Error
			if err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("a route without a node certificate was not refused: %v", err)
			}
			if !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("refused, but not for its certificate: %v", err)
			}
		})
	}
}

func TestRouteTLSFiles(t *testing.T) {
	pki := newRoutePKI(t)
	cert, key, ca := pki.node(t, "n1")
	if _, err := RouteTLS(cert, key, ca); err != nil {
		t.Fatalf("RouteTLS: %v", err)
	}
	serverOnly, serverOnlyKey, _ := pki.node(t, "server-only", x509.ExtKeyUsageServerAuth)
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, cert, key, ca, want string
	}{
		{"missing certificate", filepath.Join(t.TempDir(), "none.pem"), key, ca, "route certificate"},
		{"key of another certificate", cert, serverOnlyKey, ca, "route certificate"},
		{"serverAuth only", serverOnly, serverOnlyKey, ca, "clientAuth"},
		{"missing CA", cert, key, filepath.Join(t.TempDir(), "none.pem"), "route CA"},
		{"CA file without a certificate", cert, key, notPEM, "no PEM certificate"},
	} {
		if _, err := RouteTLS(tc.cert, tc.key, tc.ca); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: RouteTLS error %v, want one saying %q", tc.name, err, tc.want)
		}
	}
}
