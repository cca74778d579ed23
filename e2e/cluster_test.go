package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/service"
)

// The cluster tests run tetherd nodes as processes on 127.0.0.2, .3 and
// .4, so that each has an address (and a certificate) of its own, as
// nodes on separate machines would.

const clusterSecret = "e2e-cluster-secret"

// clusterNode is one tetherd process of a test cluster, on fixed ports so
// that it can be killed and started again in the same place.
type clusterNode struct {
	n        int    // 1-based
	ip       string // 127.0.0.{n+1}
	dir      string
	httpAddr string
	route    string // --cluster-listen; empty with external NATS
	args     []string
	proc     *proc
}

func (n *clusterNode) String() string { return fmt.Sprintf("node %d (%s)", n.n, n.httpAddr) }

// freePortOn returns an address on ip that nobody listens on right now.
func freePortOn(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s (this test needs 127.0.0.2-4 on loopback): %v", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newClusterNodes lays out count nodes. With natsURL empty they cluster
// their embedded NATS servers, routes in mutual TLS as docs/cluster.md
// advises; otherwise they share that external NATS.
// The connection strings of devices name node 1, so every node accepts
// node 1's name in tokens (--hostname own,node1), as every node of a real
// cluster accepts the shared name behind its load balancer.
func newClusterNodes(t *testing.T, count int, natsURL string) []*clusterNode {
	t.Helper()
	root := t.TempDir()
	nodes := make([]*clusterNode, count)
	for i := range nodes {
		ip := fmt.Sprintf("127.0.0.%d", i+2)
		nodes[i] = &clusterNode{n: i + 1, ip: ip, dir: filepath.Join(root, fmt.Sprintf("node%d", i+1)), httpAddr: freePortOn(t, ip)}
		if natsURL == "" {
			nodes[i].route = freePortOn(t, ip)
		}
	}
	var routeCA *testCA
	var routeCAFile string
	if natsURL == "" {
		routeCA = newTestCA(t, "Tether e2e route CA", nil)
		routeCAFile = filepath.Join(root, "route-ca.pem")
		if err := os.WriteFile(routeCAFile, []byte(routeCA.pem), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		names := n.ip
		if n.n != 1 {
			names += "," + nodes[0].ip
		}
		n.args = []string{"--data", n.dir, "--listen", n.httpAddr, "--mqtt-listen", "off",
			"--hostname", names, "--node-name", fmt.Sprintf("n%d", n.n), "--drain-timeout", "8s", "--log-level", "debug"}
		if natsURL != "" {
			n.args = append(n.args, "--nats", natsURL)
			continue
		}
		var peers []string
		for _, o := range nodes {
			if o != n {
				peers = append(peers, o.route)
			}
		}
		cert, key := writeCertFiles(t, issueCert(t, &x509.Certificate{
			Subject:     pkix.Name{CommonName: fmt.Sprintf("n%d", n.n)},
			IPAddresses: []net.IP{net.ParseIP(n.ip)},
			NotBefore:   time.Now().Add(-time.Hour),
			NotAfter:    time.Now().Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}, routeCA))
		n.args = append(n.args, "--cluster-name", "e2e", "--cluster-listen", n.route, "--cluster-peers", strings.Join(peers, ","),
			"--cluster-tls-cert", cert, "--cluster-tls-key", key, "--cluster-tls-ca", routeCAFile)
	}
	return nodes
}

// startClusterNodes starts node 1, gives the others its CA before their
// first start (certs.Ensure keeps a CA it finds, so one CA signs every
// node's certificate and agents trust them all), starts them, and waits
// until all are healthy. An embedded cluster is healthy only once a
// quorum has elected a JetStream leader, so the nodes start together.
func startClusterNodes(t *testing.T, tetherd string, nodes []*clusterNode) {
	t.Helper()
	first := nodes[0]
	first.start(t, tetherd)
	eventually(t, 30*time.Second, "node 1 to write its CA", func() bool {
		for _, f := range []string{"ca.pem", "ca-key.pem"} {
			if _, err := os.Stat(filepath.Join(first.dir, f)); err != nil {
				return false
			}
		}
		return true
	})
	for _, n := range nodes[1:] {
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"ca.pem", "ca-key.pem"} {
			b, err := os.ReadFile(filepath.Join(first.dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(n.dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		n.start(t, tetherd)
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() { waitHealthyQuiet(t, n) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

func (n *clusterNode) start(t *testing.T, tetherd string) {
	t.Helper()
	n.proc = startProc(t, []string{"TETHER_CLUSTER_SECRET=" + clusterSecret}, tetherd, n.args...)
}

// waitHealthyQuiet is waitHealthy for use off the test goroutine: it
// reports with Errorf.
func waitHealthyQuiet(t *testing.T, n *clusterNode) {
	deadline := time.Now().Add(90 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		select {
		case err := <-n.proc.done:
			n.proc.done <- err
			t.Errorf("%v exited: %v", n, err)
			return
		case <-tick.C:
		}
		c := clusterHTTP(t, n)
		if c == nil {
			continue
		}
		resp, err := c.Get("https://" + n.httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
	}
	t.Errorf("%v not healthy within 90 s", n)
}

// clusterHTTP is an HTTPS client trusting the node's CA; nil until the
// node has written it.
func clusterHTTP(t *testing.T, n *clusterNode) *http.Client {
	pool := caPool(n.dir)
	if pool == nil {
		return nil
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// caPool reads ca.pem of a data folder; nil until it exists.
func caPool(dir string) *x509.CertPool {
	pem, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil
	}
	return pool
}

// service is a service client on node n with the owner policy.
func (n *clusterNode) service(t *testing.T) *service.Client {
	t.Helper()
	owner, err := os.ReadFile(filepath.Join(n.dir, "owner.connstr"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := service.New(strings.TrimSpace(string(owner)), svcOptions(service.Options{TLSConfig: &tls.Config{RootCAs: caPool(n.dir)}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (n *clusterNode) env() []string {
	owner, _ := os.ReadFile(filepath.Join(n.dir, "owner.connstr"))
	return []string{"TETHER_HUB=" + strings.TrimSpace(string(owner)), "TETHER_CA=" + filepath.Join(n.dir, "ca.pem")}
}

func (n *clusterNode) kill(t *testing.T) {
	t.Helper()
	if err := n.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := <-n.proc.done
	n.proc.done <- err
}

// trackedEcho is a TCP echo server that hands each connection to the test
// as it is accepted, with a channel closed when the connection ends.
type trackedEcho struct {
	addr     string
	accepted chan *echoConn
}

type echoConn struct{ done chan struct{} }

func startTrackedEcho(t *testing.T) *trackedEcho {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	e := &trackedEcho{addr: ln.Addr().String(), accepted: make(chan *echoConn, 1024)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ec := &echoConn{done: make(chan struct{})}
			select {
			case e.accepted <- ec:
			default:
			}
			go func() {
				defer close(ec.done)
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return e
}

// next is the connection the agent made for the stream just opened: the
// agent dials its target before it accepts, so it is there already.
func (e *trackedEcho) next(t *testing.T) *echoConn {
	t.Helper()
	select {
	case c := <-e.accepted:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the agent made no connection to its target")
		return nil
	}
}

// roundTrip sends size random bytes through conn and checks by SHA-256
// that the same bytes come back: both directions of the stream.
func roundTrip(conn net.Conn, size int) error {
	payload := make([]byte, size)
	rand.Read(payload)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer conn.SetDeadline(time.Time{})
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		werr <- err
	}()
	h := sha256.New()
	if _, err := io.CopyN(h, conn, int64(size)); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if want := sha256.Sum256(payload); !slices.Equal(h.Sum(nil), want[:]) {
		return errors.New("the bytes that came back differ (SHA-256)")
	}
	return nil
}

var agentAddrRE = regexp.MustCompile(`addr=wss://([0-9.]+:[0-9]+)/`)

// agentNode is the node the agent's last (re)connect line names.
func agentNode(t *testing.T, agent *proc, from int, nodes []*clusterNode) *clusterNode {
	t.Helper()
	var last string
	for _, line := range strings.Split(agent.out.String()[from:], "\n") {
		if strings.Contains(line, "connected to hub") {
			if m := agentAddrRE.FindStringSubmatch(line); m != nil {
				last = m[1]
			}
		}
	}
	for _, n := range nodes {
		if n.httpAddr == last {
			return n
		}
	}
	t.Fatalf("cannot tell which node the agent is on (last address %q)", last)
	return nil
}

func hubsFlag(nodes []*clusterNode) string {
	var a []string
	for _, n := range nodes {
		a = append(a, n.httpAddr)
	}
	return strings.Join(a, ",")
}

// openStream opens a stream to dev1's echo through svc, bounded by d.
func openStream(svc *service.Client, d time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return svc.OpenStream(ctx, "dev1", "echo")
}

// TestClusterEmbedded runs three nodes with embedded NATS clustering:
// a device registered through node 1, its agent on one node, a stream
// homed on another; then it kills the agent's node and the stream's home
// in turn.
func TestClusterEmbedded(t *testing.T) {
	t.Parallel()
	tetherd, tether := buildBinaries(t)
	nodes := newClusterNodes(t, 3, "")
	start := time.Now()
	startClusterNodes(t, tetherd, nodes)
	t.Logf("three nodes healthy in %v", time.Since(start).Round(time.Millisecond))

	// Register through node 1.
	var devStr string
	for _, id := range []string{"dev1", "dev2", "dev3"} {
		out, stderr, err := runCmd(t, nodes[0].env(), tether, "devices", "add", id)
		if err != nil {
			t.Fatalf("devices add %s through node 1: %v: %s", id, err, stderr)
		}
		if id == "dev1" {
			devStr = strings.TrimSpace(out)
		}
	}
	echo := startTrackedEcho(t)
	agent := startProc(t, []string{"TETHER_CA=" + filepath.Join(nodes[0].dir, "ca.pem"), "TETHER_DEVICE=", "TETHER_HUBS="}, tether,
		"agent", "--device", devStr, "--allow", "echo="+echo.addr, "--hubs", hubsFlag(nodes), "--log-level", "debug")
	waitOutput(t, agent, 0, "connected to hub", 30*time.Second)
	waitConnected(t, nodes[0].env(), tether, "dev1")
	agentOn := agentNode(t, agent, 0, nodes)
	// The stream's home: node 3, or node 1 when the agent picked node 3.
	home := nodes[2]
	if agentOn == home {
		home = nodes[0]
	}
	t.Logf("agent on %v; streams homed on %v", agentOn, home)
	svc := home.service(t)
	conn, err := openStream(svc, 15*time.Second)
	if err != nil {
		t.Fatalf("stream through %v: %v", home, err)
	}
	defer conn.Close()
	echo.next(t)
	if err := roundTrip(conn, 4<<20); err != nil {
		t.Fatalf("stream through %v: %v", home, err)
	}

	// SIGKILL the agent's node: the stream homed elsewhere never touched
	// it and carries on.
	mark := len(agent.out.String())
	killed := time.Now()
	agentOn.kill(t)
	if err := roundTrip(conn, 1<<20); err != nil {
		t.Fatalf("the open stream homed on %v after %v died: %v", home, agentOn, err)
	}
	waitOutput(t, agent, mark, "connection to hub lost", 10*time.Second)
	back := waitOutput(t, agent, mark, "reconnected to hub", 15*time.Second)
	t.Logf("agent reconnected %v after the kill", back.Sub(killed).Round(time.Millisecond))

	// A new stream within 15 s of the kill.
	var conn2 net.Conn
	tries := 0
	for {
		tries++
		conn2, err = openStream(svc, 5*time.Second)
		if err == nil {
			break
		}
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("no new stream within 15 s of killing %v (%d tries; last: %v)", agentOn, tries, err)
		}
		t.Logf("new stream, try %d: %v", tries, err)
		select {
		case <-time.After(200 * time.Millisecond):
		case err := <-agent.done:
			agent.done <- err
			t.Fatalf("agent exited: %v", err)
		}
	}
	t.Logf("new stream %v after the kill (%d tries)", time.Since(killed).Round(time.Millisecond), tries)
	echo.next(t)
	if err := roundTrip(conn2, 1<<20); err != nil {
		t.Fatalf("new stream: %v", err)
	}
	conn2.Close()

	// The registry, replicated, still holds every device. Reading one
	// device works at once (any replica answers); listing needs the
	// bucket's leader, which JetStream may still be electing if it was on
	// the dead node.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for _, id := range []string{"dev1", "dev2", "dev3"} {
		if _, err := svc.GetDevice(ctx, id); err != nil {
			t.Fatalf("get %s with %v dead: %v", id, agentOn, err)
		}
	}
	listed := time.Now()
	var ids []string
	eventually(t, 40*time.Second, "a device list with "+agentOn.String()+" dead", func() bool {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		devs, err := svc.ListDevices(lctx)
		if err != nil {
			return false
		}
		ids = ids[:0]
		for _, d := range devs {
			ids = append(ids, d.DeviceID)
		}
		return true
	})
	t.Logf("device list %v after the GETs", time.Since(listed).Round(time.Millisecond))
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"dev1", "dev2", "dev3"}) {
		t.Fatalf("registry holds %q after %v died", ids, agentOn)
	}

	// Kill the home of an open stream: both of its ends end within 5 s.
	// The home is the live node the agent is not on now.
	now := agentNode(t, agent, mark, nodes)
	var victim *clusterNode
	for _, n := range nodes {
		if n != agentOn && n != now {
			victim = n
		}
	}
	t.Logf("agent now on %v; killing %v, home of a new stream", now, victim)
	conn3, err := openStream(victim.service(t), 10*time.Second)
	if err != nil {
		t.Fatalf("stream through %v: %v", victim, err)
	}
	defer conn3.Close()
	target := echo.next(t)
	if err := roundTrip(conn3, 64<<10); err != nil {
		t.Fatalf("stream through %v: %v", victim, err)
	}
	killed = time.Now()
	victim.kill(t)
	conn3.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn3.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the service's end of a stream whose home died: read %v, want it closed within 5 s", err)
	}
	t.Logf("service end closed %v after its home died: %v", time.Since(killed).Round(time.Millisecond), err)
	select {
	case <-target.done:
		t.Logf("device end (agent → target) closed %v after its home died", time.Since(killed).Round(time.Millisecond))
	case <-time.After(5*time.Second - time.Since(killed)):
		t.Fatal("the device's end of a stream whose home died was still open after 5 s")
	}
}

// TestClusterExternalNATS runs two nodes on one external NATS server
// (started here, in-process) and opens a stream through the node the
// device is not connected to.
func TestClusterExternalNATS(t *testing.T) {
	t.Parallel()
	tetherd, tether := buildBinaries(t)
	natsURL := startNATS(t)
	// A list, its first seed dead: --nats takes several URLs.
	dead := deadAddr(t)
	nodes := newClusterNodes(t, 2, "nats://"+dead+","+natsURL)
	startClusterNodes(t, tetherd, nodes)

	out, stderr, err := runCmd(t, nodes[0].env(), tether, "devices", "add", "dev1")
	if err != nil {
		t.Fatalf("devices add through node 1: %v: %s", err, stderr)
	}
	echo := startTrackedEcho(t)
	// No --hubs: the connection string names node 1.
	startProc(t, []string{"TETHER_CA=" + filepath.Join(nodes[0].dir, "ca.pem"), "TETHER_DEVICE=", "TETHER_HUBS="}, tether,
		"agent", "--device", strings.TrimSpace(out), "--allow", "echo="+echo.addr)
	waitConnected(t, nodes[1].env(), tether, "dev1")

	conn, err := openStream(nodes[1].service(t), 15*time.Second)
	if err != nil {
		t.Fatalf("stream through node 2 to a device on node 1: %v", err)
	}
	defer conn.Close()
	if err := roundTrip(conn, 4<<20); err != nil {
		t.Fatal(err)
	}

	// The same device connects to node 2 (the SDK, in-process): node 1
	// must drop its now stale session rather than keep routing to it.
	mark := len(nodes[0].proc.out.String())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	dc, err := device.Dial(ctx, strings.TrimSpace(out), devOptions(device.Options{
		TLSConfig: &tls.Config{RootCAs: caPool(nodes[0].dir)},
		Hubs:      []string{nodes[1].httpAddr},
	}))
	if err != nil {
		t.Fatalf("device SDK to node 2: %v", err)
	}
	defer dc.Close()
	waitOutput(t, nodes[0].proc, mark, "device connected to another node; dropping its session here", 10*time.Second)
}

// TestClusterRollingRestart restarts the three nodes of an embedded
// cluster one at a time (SIGTERM, drain, start again) while a loop opens
// a stream every 100 ms, through each node in turn. Every stream either
// works or fails with a clear error, none hangs, every node exits 0, and
// the device is reachable after each step.
func TestClusterRollingRestart(t *testing.T) {
	t.Parallel()
	tetherd, tether := buildBinaries(t)
	nodes := newClusterNodes(t, 3, "")
	startClusterNodes(t, tetherd, nodes)
	out, stderr, err := runCmd(t, nodes[0].env(), tether, "devices", "add", "dev1")
	if err != nil {
		t.Fatalf("devices add: %v: %s", err, stderr)
	}
	echo := startTrackedEcho(t)
	agent := startProc(t, []string{"TETHER_CA=" + filepath.Join(nodes[0].dir, "ca.pem"), "TETHER_DEVICE=", "TETHER_HUBS="}, tether,
		"agent", "--device", strings.TrimSpace(out), "--allow", "echo="+echo.addr, "--hubs", hubsFlag(nodes))
	waitConnected(t, nodes[0].env(), tether, "dev1")
	svcs := make([]*service.Client, len(nodes))
	for i, n := range nodes {
		svcs[i] = n.service(t)
	}

	var ok, failed, hung atomic.Int64
	var errMu sync.Mutex
	errs := map[string]int{}
	stop := make(chan struct{})
	var loop sync.WaitGroup
	loop.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var inflight sync.WaitGroup
		defer inflight.Wait()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			svc := svcs[i%len(svcs)]
			inflight.Go(func() {
				start := time.Now()
				conn, err := openStream(svc, 20*time.Second)
				if err == nil {
					err = roundTrip(conn, 4<<10)
					conn.Close()
				}
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 15*time.Second:
					hung.Add(1)
					t.Errorf("a stream hung for %v: %v", time.Since(start).Round(time.Millisecond), err)
				default:
					failed.Add(1)
					errMu.Lock()
					errs[clearError(err)]++
					errMu.Unlock()
				}
			})
		}
	})

	for _, n := range nodes {
		// Any live node will do for the check: the stopped one is not.
		other := svcs[n.n%len(nodes)]
		stopped := time.Now()
		if err := n.proc.stop(t); err != nil {
			t.Errorf("%v exited with %v after SIGTERM", n, err)
		}
		t.Logf("%v drained and stopped in %v", n, time.Since(stopped).Round(time.Millisecond))
		eventually(t, 20*time.Second, "dev1 reachable with "+n.String()+" down", func() bool {
			conn, err := openStream(other, 5*time.Second)
			if err != nil {
				return false
			}
			defer conn.Close()
			return roundTrip(conn, 1024) == nil
		})
		n.start(t, tetherd)
		waitHealthyQuiet(t, n)
		if t.Failed() {
			t.FailNow()
		}
		eventually(t, 20*time.Second, "dev1 reachable through the restarted "+n.String(), func() bool {
			conn, err := openStream(svcs[n.n-1], 5*time.Second)
			if err != nil {
				return false
			}
			defer conn.Close()
			return roundTrip(conn, 1024) == nil
		})
	}
	close(stop)
	loop.Wait()
	t.Logf("streams during the rolling restart: %d worked, %d failed with a clear error, %d hung; errors: %v",
		ok.Load(), failed.Load(), hung.Load(), errs)
	if ok.Load() == 0 {
		t.Error("no stream worked during the rolling restart")
	}
	if t.Failed() {
		t.Logf("agent log:\n%s", agent.out)
	}
}

// clearError reduces an error to its kind, for the summary: what a user
// would read, without stream ids.
func clearError(err error) string {
	for _, k := range []error{service.ErrDeviceOffline, service.ErrTimeout, service.ErrRejected} {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	var ae *service.APIError
	if errors.As(err, &ae) {
		return fmt.Sprintf("HTTP %d", ae.StatusCode)
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}
