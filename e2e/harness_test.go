package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/hub/certs"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
)

// testHub is one hub node on loopback, with TLS from its own CA, as
// tetherd runs it.
type testHub struct {
	t        *testing.T
	Dir      string
	Addr     string // 127.0.0.1:port of HTTPS
	MQTTAddr string
	TLS      *tls.Config // client config trusting the hub's CA
	Owner    string      // owner connection string
	Server   *hub.Server
	Registry *registry.Registry

	cluster *cluster.Cluster
	http    *http.Server
	mqttLn  net.Listener
	closed  bool
}

type hubOptions struct {
	dir    string        // reuse a data folder (restart)
	window time.Duration // handshake window, and its maximum
	logTo  io.Writer     // the hub's log, as JSON lines; default: discarded (or TETHER_TEST_LOG)
	limits hub.Limits    // zero fields: the defaults
	nats   string        // an external NATS URL; default an embedded server of the hub's own
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("TETHER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func startHub(t *testing.T, o hubOptions) *testHub {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cert, err := certs.Ensure(o.dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(o.dir, certs.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)

	log := testLogger(t)
	if o.logTo != nil {
		log = slog.New(slog.NewJSONHandler(o.logTo, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cl, err := cluster.Start(ctx, cluster.Options{DataDir: o.dir, URL: o.nats, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Open(ctx, cl.JetStream(), registry.Options{Logger: log})
	if err != nil {
		cl.Close()
		t.Fatal(err)
	}
	if _, err := reg.EnsureDefaultPolicies(ctx); err != nil {
		cl.Close()
		t.Fatal(err)
	}
	owner, err := reg.Policy(ctx, "iothubowner")
	if err != nil {
		cl.Close()
		t.Fatal(err)
	}
	// As tetherd: client certificates are requested, checked by the hub.
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert}
	// Plain TCP listeners, TLS added by the hub's TLSListener as tetherd
	// does (handshake time limit) once the hub exists.
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mqttLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := httpLn.Addr().String()
	srv, err := hub.New(hub.Options{
		Cluster:   cl,
		Registry:  reg,
		HostNames: []string{"127.0.0.1"},
		PublicURL: "https://" + addr,
		Window:    o.window,
		MaxWindow: o.window,
		Limits:    o.limits,
		Logger:    log,
	})
	if err != nil {
		t.Fatal(err)
	}
	httpLn = srv.TLSListener(httpLn, serverTLS)
	mqttLn = srv.TLSListener(mqttLn, serverTLS)
	h := &testHub{
		t: t, Dir: o.dir, Addr: addr, MQTTAddr: mqttLn.Addr().String(),
		TLS:      &tls.Config{RootCAs: pool},
		Owner:    sas.ConnectionString{HostName: addr, SharedAccessKeyName: owner.Name, SharedAccessKey: owner.PrimaryKey}.String(),
		Server:   srv,
		Registry: reg,
		cluster:  cl,
		http:     &http.Server{Handler: srv, ReadHeaderTimeout: srv.Limits().HeaderTimeout, MaxHeaderBytes: srv.Limits().MaxHeaderBytes},
		mqttLn:   mqttLn,
	}
	go h.http.Serve(httpLn)
	go srv.ServeMQTT(mqttLn)
	t.Cleanup(h.Close)
	return h
}

// Close stops the node the way tetherd does on SIGTERM.
func (h *testHub) Close() {
	if h.closed {
		return
	}
	h.closed = true
	h.mqttLn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.http.Shutdown(ctx)
	if err := h.Server.Close(); err != nil {
		h.t.Errorf("hub close: %v", err)
	}
	h.http.Close()
	if err := h.cluster.Close(); err != nil {
		h.t.Errorf("cluster close: %v", err)
	}
}

// service returns a service client with the owner policy.
func (h *testHub) service(t *testing.T) *service.Client {
	t.Helper()
	c, err := service.New(h.Owner, service.Options{TLSConfig: h.TLS})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// addDevice registers id and returns its connection string.
func (h *testHub) addDevice(t *testing.T, id string) string {
	t.Helper()
	svc := h.service(t)
	d, err := svc.CreateDevice(context.Background(), id)
	if err != nil {
		t.Fatalf("create device %s: %v", id, err)
	}
	return svc.DeviceConnectionString(d)
}

// connectDevice dials the hub as a device and waits until the hub routes
// to it.
func (h *testHub) connectDevice(t *testing.T, connStr string, tr device.Transport) *device.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dc, err := device.Dial(ctx, connStr, device.Options{TLSConfig: h.TLS, Transport: tr, MQTTAddress: h.MQTTAddr, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("device dial: %v", err)
	}
	t.Cleanup(func() { dc.Close() })
	return dc
}

// serveEcho accepts every stream request on dc and echoes its bytes,
// until dc is closed.
func serveEcho(t *testing.T, dc *device.Client) {
	go func() {
		for {
			req, err := dc.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				conn, err := req.Accept(context.Background())
				if err != nil {
					t.Logf("accept: %v", err)
					return
				}
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
}

// eventually polls cond until it holds or d passes. For state that has no
// event to wait on (the registry's view of a connection).
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
