package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/node"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/service"
)

// testHub is one hub node on loopback, run by hub/node as tetherd runs
// it: TLS from its own CA, and a drain when it stops.
type testHub struct {
	t        *testing.T
	Dir      string
	Addr     string // 127.0.0.1:port of HTTPS
	MQTTAddr string
	TLS      *tls.Config // client config trusting the hub's CA
	Owner    string      // owner connection string
	Server   *hub.Server
	Registry *registry.Registry

	node *node.Node
}

// testDrainTimeout is the drain of a test's hub when it stops: tetherd's
// drain, shorter than its 30 s default, since a hub stops with its test,
// often with a device or a stream the test left open.
const testDrainTimeout = 500 * time.Millisecond

type hubOptions struct {
	dir    string        // reuse a data folder (restart)
	window time.Duration // handshake window, and its maximum
	logTo  io.Writer     // the hub's log, as JSON lines; default: discarded (or TETHER_TEST_LOG)
	limits hub.Limits    // zero fields: the defaults
	nats   string        // an external NATS URL; default an embedded server of the hub's own
	// noSessions makes a hub without sessions (tetherd --sessions=false),
	// whatever TETHER_SESSIONS says: Tether's ends fall back.
	noSessions bool
}

// noSessions runs the tests on connections of their own, as against a hub
// without sessions: TETHER_SESSIONS=0 (.ci/run runs the package both
// ways) turns sessions off in the hubs, service clients and devices the
// harness starts and, through the environment, in every tetherd and
// tether process the tests run.
var noSessions = os.Getenv("TETHER_SESSIONS") == "0"

// needSessions skips a test about sessions in a run without them.
func needSessions(t *testing.T) {
	t.Helper()
	if noSessions {
		t.Skip("a test of sessions; TETHER_SESSIONS=0 turned them off")
	}
}

// svcOptions and devOptions are o with sessions off in a run without
// them.
func svcOptions(o service.Options) service.Options {
	o.NoSessions = o.NoSessions || noSessions
	return o
}

func devOptions(o device.Options) device.Options {
	o.NoSessions = o.NoSessions || noSessions
	return o
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
	// A data folder must be private; t.TempDir's mode is the umask's.
	if err := os.Chmod(o.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	log := testLogger(t)
	if o.logTo != nil {
		log = slog.New(slog.NewJSONHandler(o.logTo, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	mqttLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{
		DataDir:      o.dir,
		MQTT:         mqttLn,
		HostNames:    []string{"127.0.0.1"},
		Cluster:      cluster.Options{URL: o.nats},
		DrainTimeout: testDrainTimeout,
		Window:       o.window,
		MaxWindow:    o.window,
		Limits:       o.limits,
		Logger:       log,
		NoSessions:   noSessions || o.noSessions,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &testHub{
		t: t, Dir: o.dir, Addr: n.HTTPAddr().String(), MQTTAddr: n.MQTTAddr().String(),
		TLS:      n.ClientTLS(),
		Owner:    n.OwnerConnectionString(),
		Server:   n.Server(),
		Registry: n.Registry(),
		node:     n,
	}
	t.Cleanup(h.Close)
	return h
}

// Close stops the node the way tetherd does on SIGTERM: it drains, then
// closes. Idempotent.
func (h *testHub) Close() {
	if err := h.node.Shutdown(context.Background()); err != nil {
		h.t.Errorf("hub shutdown: %v", err)
	}
}

// service returns a service client with the owner policy.
func (h *testHub) service(t *testing.T) *service.Client {
	t.Helper()
	c, err := service.New(h.Owner, svcOptions(service.Options{TLSConfig: h.TLS}))
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
	dc, err := device.Dial(ctx, connStr, devOptions(device.Options{TLSConfig: h.TLS, Transport: tr, MQTTAddress: h.MQTTAddr, Logger: testLogger(t)}))
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
