package hub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// startClusterOfThree starts three embedded nodes joined as one JetStream
// cluster, as three tetherd would with --cluster-peers, each with the
// registry open (R3). Cleanups close them.
func startClusterOfThree(t *testing.T) ([]*cluster.Cluster, []*registry.Registry) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	routes := make([]string, 3)
	for i := range routes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		routes[i] = ln.Addr().String()
		ln.Close()
	}
	nodes := make([]*cluster.Cluster, 3)
	regs := make([]*registry.Registry, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			nodes[i], errs[i] = cluster.Start(ctx, cluster.Options{
				DataDir: t.TempDir(), Name: fmt.Sprintf("n%d", i+1),
				ClusterName: "election", ClusterListen: routes[i], ClusterPeers: routes, ClusterSecret: "s3cret",
			})
			if errs[i] != nil {
				return
			}
			// Creating R3 buckets waits for all three to be JetStream peers.
			errs[i] = cluster.Retry(ctx, nil, "opening the registry", func(ctx context.Context) error {
				var err error
				regs[i], err = registry.Open(ctx, nodes[i].JetStream(), registry.Options{Replicas: nodes[i].Replicas()})
				return err
			})
		})
	}
	wg.Wait()
	for i, c := range nodes {
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i+1, errs[i])
		}
	}
	return nodes, regs
}

// A node is lost, the one whose JetStream server led the device bucket's
// stream. While the other two elect a new leader, and after, the registry
// through a surviving node answers as if nothing happened: GET /devices
// lists every device, GET /devices/{id} finds one and PUT /devices/{id}
// writes one, none of them a 500 "registry unavailable".
func TestRegistryThroughElection(t *testing.T) {
	nodes, regs := startClusterOfThree(t)
	ids := []string{"dev1", "dev2", "dev3"}
	for _, id := range ids {
		if _, _, err := regs[0].Put(t.Context(), wire.Device{DeviceID: id}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := regs[0].EnsureDefaultPolicies(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A replica answers reads as soon as it is asked; the ones that have
	// not applied these writes yet would answer "not found".
	for _, b := range []string{registry.BucketDevices, registry.BucketPolicies} {
		replicated(t, nodes[0], "KV_"+b)
	}
	stream := "KV_" + registry.BucketDevices
	info, err := nodes[0].JetStream().Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	leader := info.CachedInfo().Cluster.Leader
	lost := slices.IndexFunc(nodes, func(c *cluster.Cluster) bool { return c.Name() == leader })
	if lost < 0 {
		t.Fatalf("stream %s led by %q, none of the nodes", stream, leader)
	}
	via := (lost + 1) % 3
	h := serveHub(t, nodes[via], regs[via], Options{})
	svc, err := service.New(h.owner, service.Options{TLSConfig: h.tls})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()

	// The new leader announces itself.
	elected := make(chan struct{}, 1)
	sub, err := nodes[via].Conn().Subscribe("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."+stream, func(*nats.Msg) {
		select {
		case elected <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nodes[via].Conn().Flush(); err != nil {
		t.Fatal(err)
	}

	var (
		stop     = make(chan struct{})
		failures = make(chan error, 64)
		answers  atomic.Int64
		warm     = make(chan struct{}) // closed at the 20th answer
		wg       sync.WaitGroup
	)
	// halt lets each client finish the request it has under way.
	halt := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer halt()
	// A node stopped as this one is (not killed) shuts its JetStream down
	// before its routes: for those few milliseconds it still answers the
	// reads of the others, "not found", whatever the key. That is not an
	// election, and a node that is lost rather than stopped does not do
	// it; an answer that came from it is left out.
	var stopBegan, stopEnded atomic.Int64
	stopping := func(start, end time.Time) bool {
		began, ended := stopBegan.Load(), stopEnded.Load()
		return began != 0 && end.UnixNano() >= began && (ended == 0 || start.UnixNano() <= ended)
	}
	fail := func(err error) {
		select {
		case failures <- err:
		default:
		}
	}
	call := func(what string, fn func(ctx context.Context) error) {
		// Longer than any wait the registry allows itself: a request
		// that hangs is a failure too.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		start := time.Now()
		err := fn(ctx)
		if err != nil && notFound(err) && stopping(start, time.Now()) {
			t.Logf("%s while %s stopped: %v", what, leader, err)
			return
		}
		if err != nil {
			fail(fmt.Errorf("%s after %v: %w", what, time.Since(start).Round(time.Millisecond), err))
			return
		}
		if answers.Add(1) == 20 {
			close(warm)
		}
	}
	client := func(fn func()) {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				fn()
			}
		})
	}
	for range 8 {
		client(func() {
			call("GET /devices", func(ctx context.Context) error {
				devs, err := svc.ListDevices(ctx)
				if err != nil {
					return err
				}
				var got []string
				for _, d := range devs {
					got = append(got, d.DeviceID)
				}
				if !slices.Equal(got, ids) {
					return fmt.Errorf("%w: listed %q, want %q", errMissing, got, ids)
				}
				return nil
			})
		})
		client(func() {
			call("GET /devices/dev2", func(ctx context.Context) error {
				_, err := svc.GetDevice(ctx, "dev2")
				return err
			})
		})
	}
	client(func() {
		call("PUT /devices/dev3", func(ctx context.Context) error {
			_, err := svc.SetDeviceStatus(ctx, "dev3", true)
			return err
		})
	})

	// The clients have their requests going before the node is lost.
	select {
	case <-warm:
	case err := <-failures:
		t.Fatalf("before the election: %v", err)
	}
	stopBegan.Store(time.Now().UnixNano())
	nodes[lost].Close()
	stopEnded.Store(time.Now().UnixNano())
	t.Logf("stopped %s, leader of %s", leader, stream)
	select {
	case <-elected:
	case err := <-failures:
		t.Fatalf("during the election: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no new leader within 30 s")
	}
	// The requests under way now began during the election or after it.
	halt()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	t.Logf("%d answers, the last after the new leader was elected", answers.Load())
}

var errMissing = errors.New("a device is missing")

// notFound reports whether err says a device or a policy is not there.
func notFound(err error) bool {
	var api *service.APIError
	return errors.Is(err, errMissing) || errors.As(err, &api) && (api.StatusCode == 404 || api.StatusCode == 401)
}

// replicated waits until every replica of stream has all of its messages.
// Nothing announces it: the stream's state is polled.
func replicated(t *testing.T, c *cluster.Cluster, stream string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := c.JetStream().Stream(t.Context(), stream)
		if err == nil && caughtUp(s.CachedInfo().Cluster) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not replicated to all three nodes within 30 s: %v", stream, err)
		}
		<-tick.C
	}
}

func caughtUp(c *jetstream.ClusterInfo) bool {
	if c == nil || c.Leader == "" || len(c.Replicas) != 2 {
		return false
	}
	for _, r := range c.Replicas {
		if !r.Current || r.Lag != 0 {
			return false
		}
	}
	return true
}
