package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/node"
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
	fs.DurationVar(&c.drainTimeout, "drain-timeout", node.DefaultDrainTimeout, "on SIGTERM, how long open streams may run on while devices move to other nodes; 0 stops at once")
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
