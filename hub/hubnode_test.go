package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/sas"
)

// hubNode is a Server over a cluster and registry the test started,
// serving HTTPS and MQTT over TLS on loopback, for the tests that need the
// Server itself or a cluster of their own (startBadInputHub starts its own
// single node and keeps its Server to itself).
type hubNode struct {
	srv   *Server
	reg   *registry.Registry
	addr  string      // 127.0.0.1:port of HTTPS
	mqtt  string      // 127.0.0.1:port of MQTT over TLS
	tls   *tls.Config // a client's, trusting the node's certificate
	owner string      // connection string of iothubowner
}

// serveHub starts a Server on cl and reg. The test's cleanup closes it
// before the cluster, whose cleanup the caller registered earlier.
func serveHub(t *testing.T, cl *cluster.Cluster, reg *registry.Registry, opts Options) *hubNode {
	t.Helper()
	ctx := t.Context()
	if _, err := reg.EnsureDefaultPolicies(ctx); err != nil {
		t.Fatal(err)
	}
	owner, err := reg.Policy(ctx, "iothubowner")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	addr := ts.Listener.Addr().String()
	opts.Cluster, opts.Registry = cl, reg
	opts.HostNames, opts.PublicURL = []string{"127.0.0.1"}, "https://"+addr
	srv, err := New(opts)
	if err != nil {
		ts.Close()
		t.Fatal(err)
	}
	ts.Config.Handler = srv
	ts.StartTLS()
	mqttLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mqttTLS := ts.TLS.Clone()
	mqttTLS.NextProtos = nil // HTTP's; a device may ask for its own
	go srv.ServeMQTT(srv.TLSListener(mqttLn, mqttTLS))
	t.Cleanup(func() {
		ts.Close()
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	return &hubNode{
		srv: srv, reg: reg, addr: addr, mqtt: mqttLn.Addr().String(),
		tls:   &tls.Config{RootCAs: pool},
		owner: sas.ConnectionString{HostName: addr, SharedAccessKeyName: owner.Name, SharedAccessKey: owner.PrimaryKey}.String(),
	}
}

// startHubNode starts a node of its own: an embedded NATS, the registry
// and a Server.
func startHubNode(t *testing.T, opts Options) *hubNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cl, err := cluster.Start(ctx, cluster.Options{DataDir: t.TempDir(), Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cl.Close(); err != nil {
			t.Error(err)
		}
	})
	reg, err := registry.Open(ctx, cl.JetStream(), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return serveHub(t, cl, reg, opts)
}
