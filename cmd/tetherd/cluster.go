package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/hub/streamlog"
)

// clusterConfig holds the flags of running several nodes as one hub.
type clusterConfig struct {
	nodeName string
	name     string // --cluster-name: embedded NATS clustering on
	listen   string
	peers    []string
	secret   string
	// Route TLS (--cluster-tls-*): all three or none.
	tlsCert, tlsKey, tlsCA string
	// TLS to an external NATS (--nats-ca, --nats-cert, --nats-key).
	natsCA, natsCert, natsKey string
	replicas                  int
	drainTimeout              time.Duration
}

// addClusterFlags registers the clustering and drain flags on fs. The
// returned finish completes c once fs is parsed; source names where a
// flag's value came from.
func addClusterFlags(fs *flag.FlagSet, c *clusterConfig, source func(name string) string) (finish func() error) {
	fs.StringVar(&c.nodeName, "node-name", "", "this node's `NAME`, unique in a cluster and the same across restarts; default the machine's host name")
	fs.StringVar(&c.name, "cluster-name", "", "join the embedded NATS servers of several nodes as the cluster `NAME`")
	fs.StringVar(&c.listen, "cluster-listen", ":6222", "`HOST:PORT` for NATS routes from the other nodes, with --cluster-name")
	var peers string
	fs.StringVar(&peers, "cluster-peers", "", "`HOST:PORT,...` of the other nodes' --cluster-listen")
	fs.StringVar(&c.secret, "cluster-secret", "", "shared `SECRET` a node must present to join the cluster; prefer the environment variable to the flag, which other users see in ps")
	fs.StringVar(&c.tlsCert, "cluster-tls-cert", "", "this node's route certificate (PEM `FILE`; serverAuth and clientAuth, valid for the address the peers dial): routes in mutual TLS, with --cluster-tls-key and --cluster-tls-ca")
	fs.StringVar(&c.tlsKey, "cluster-tls-key", "", "key of --cluster-tls-cert (PEM `FILE`)")
	fs.StringVar(&c.tlsCA, "cluster-tls-ca", "", "CA that signs every node's route certificate (PEM `FILE`); peers with others are refused")
	fs.StringVar(&c.natsCA, "nats-ca", "", "CA of the --nats servers' certificates (PEM `FILE`), when not in the system's roots; use tls:// URLs")
	fs.StringVar(&c.natsCert, "nats-cert", "", "client certificate (PEM `FILE`) for --nats servers that ask for one, with --nats-key")
	fs.StringVar(&c.natsKey, "nats-key", "", "key of --nats-cert (PEM `FILE`)")
	fs.IntVar(&c.replicas, "replicas", 0, "`N` replicas of the registry and stream logs when first created: 0 picks 3 with three or more nodes, else 1")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, how long open streams may run on while devices move to other nodes; 0 stops at once")
	return func() error {
		for p := range strings.SplitSeq(peers, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.peers = append(c.peers, p)
			}
		}
		if c.replicas < 0 || c.replicas > 5 {
			return fmt.Errorf("%s %d: want 0 (automatic) to 5", source("replicas"), c.replicas)
		}
		return nil
	}
}

// validate checks the clustering flags together with --nats.
func (c *clusterConfig) validate(natsURL string) error {
	if c.drainTimeout < 0 {
		return errors.New("--drain-timeout must not be negative")
	}
	if (c.natsCA != "" || c.natsCert != "" || c.natsKey != "") && natsURL == "" {
		return errors.New("--nats-ca, --nats-cert and --nats-key are for the connection to an external NATS: they need --nats")
	}
	if (c.natsCert == "") != (c.natsKey == "") {
		return errors.New("--nats-cert and --nats-key go together")
	}
	tlsGiven := c.tlsCert != "" || c.tlsKey != "" || c.tlsCA != ""
	if tlsGiven && (c.tlsCert == "" || c.tlsKey == "" || c.tlsCA == "") {
		return errors.New("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together")
	}
	if c.name == "" {
		if len(c.peers) > 0 {
			return errors.New("--cluster-peers needs --cluster-name")
		}
		if tlsGiven {
			return errors.New("--cluster-tls-* secure the routes between nodes: they need --cluster-name")
		}
		return nil
	}
	if natsURL != "" {
		return errors.New("--cluster-name runs embedded NATS servers as a cluster; with --nats the cluster is external: give one or the other")
	}
	if c.secret == "" {
		return errors.New("--cluster-name needs a shared secret in TETHER_CLUSTER_SECRET (or --cluster-secret), or anyone who reaches --cluster-listen could join")
	}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return fmt.Errorf("--cluster-listen %q: %w", c.listen, err)
	}
	if len(c.peers) == 0 {
		return errors.New("--cluster-name needs --cluster-peers: the other nodes' --cluster-listen addresses")
	}
	for _, p := range c.peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return fmt.Errorf("--cluster-peers %q: %w", p, err)
		}
	}
	return nil
}

// clusterOptions are the cluster.Options of a tetherd run. It loads the
// route certificates, and warns when a cluster's routes go in the clear.
func clusterOptions(c *config, log *slog.Logger) (cluster.Options, error) {
	o := cluster.Options{
		DataDir:       c.data,
		URL:           c.natsURL,
		Name:          c.cluster.nodeName,
		Logger:        log,
		ClusterName:   c.cluster.name,
		ClusterListen: c.cluster.listen,
		ClusterPeers:  c.cluster.peers,
		ClusterSecret: c.cluster.secret,
		Replicas:      c.cluster.replicas,
	}
	if cc := c.cluster; cc.natsCA != "" || cc.natsCert != "" {
		conf, err := cluster.ClientTLS(cc.natsCA, cc.natsCert, cc.natsKey)
		if err != nil {
			return o, err
		}
		o.NATSTLS = conf
	}
	switch {
	case c.cluster.tlsCert != "":
		conf, err := cluster.RouteTLS(c.cluster.tlsCert, c.cluster.tlsKey, c.cluster.tlsCA)
		if err != nil {
			return o, err
		}
		o.ClusterTLS = conf
	case c.cluster.name != "":
		log.Warn("routes between nodes are not encrypted: they carry stream tokens and device records in the clear; keep --cluster-listen on a private network, or give --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca")
	}
	return o, nil
}

// startTimeout bounds start-up until the hub serves. A clustered node
// waits for a quorum of its peers (and, on a new cluster, for every peer
// an R3 bucket needs), so it is given longer to let an operator start the
// nodes one after another.
func startTimeout(c *config) time.Duration {
	if c.cluster.name != "" || c.natsURL != "" {
		return 5 * time.Minute
	}
	return 60 * time.Second
}

// openState opens (creating on a new hub) the registry buckets, the
// default access policies and the stream-log stream, retrying while the
// JetStream cluster is still forming. Every node runs this; the buckets
// and policies are created with create-only operations, so the first node
// to get there makes them and the others find them.
//
// The stream-log stream is created here, with retries, although hub.New
// opens it too: nodes starting together send the same creation at once,
// and JetStream may leave a duplicate of a creation still in flight
// unanswered, which a single attempt would take for a failure.
func openState(ctx context.Context, cl *cluster.Cluster, retention time.Duration, log *slog.Logger) (*registry.Registry, error) {
	var reg *registry.Registry
	err := cluster.Retry(ctx, log, "opening the registry", func(ctx context.Context) error {
		var err error
		reg, err = registry.Open(ctx, cl.JetStream(), registry.Options{Logger: log, Replicas: cl.Replicas()})
		if err != nil {
			return err
		}
		_, err = reg.EnsureDefaultPolicies(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	err = cluster.Retry(ctx, log, "opening the stream logs", func(ctx context.Context) error {
		_, err := streamlog.Open(ctx, cl.JetStream(), streamlog.Options{Retention: retention, Replicas: cl.Replicas()})
		return err
	})
	return reg, err
}

// drainer is what drain needs of the hub.
type drainer interface {
	Drain(ctx context.Context, spread time.Duration) error
}

// drain runs the hub's lame-duck mode for up to timeout, or until a second
// SIGINT/SIGTERM. Devices are moved within a quarter of the timeout (at
// most 10 s), leaving the rest for streams to end.
func drain(srv drainer, timeout time.Duration, log *slog.Logger) {
	if timeout <= 0 {
		return
	}
	sig, stop := notifySignals()
	defer stop()
	ctx, cancel := context.WithTimeout(sig, timeout)
	defer cancel()
	spread := min(timeout/4, 10*time.Second)
	log.Info("draining (a second SIGTERM stops at once)", "timeout", timeout)
	if err := srv.Drain(ctx, spread); err != nil {
		log.Warn("drain ended early; closing what is left", "err", err)
	}
}

// notifySignals is a context ended by SIGINT or SIGTERM.
func notifySignals() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
