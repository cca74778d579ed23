package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
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
func startTrio(t *testing.T, ctx context.Context) []*Cluster {
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

func TestEmbeddedCluster(t *testing.T) {
	ctx := ctxTimeout(t, 90*time.Second)
	nodes := startTrio(t, ctx)
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

// TestRouteNeedsSecret speaks the route protocol to a clustered node with
// a wrong password and expects to be refused.
func TestRouteNeedsSecret(t *testing.T) {
	ctx := ctxTimeout(t, 30*time.Second)
	route := freeAddr(t)
	// A one-node "cluster" whose peer is absent: enough to open the route
	// port; Start waits for JetStream, which needs a quorum, so run it in
	// the background and stop it with ctx.
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var c *Cluster
	go func() {
		defer close(done)
		c, _ = Start(sctx, Options{
			DataDir: t.TempDir(), Name: "lonely", ClusterName: "c", ClusterListen: route,
			ClusterPeers: []string{freeAddr(t)}, ClusterSecret: "right",
		})
	}()
	defer func() {
		cancel()
		<-done
		if c != nil {
			c.Close()
		}
	}()

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
	defer conn.Close()
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
