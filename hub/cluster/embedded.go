package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// routeTLSTimeout bounds a route's TLS handshake.
const routeTLSTimeout = 5 * time.Second

// routeUser is the user name routes authenticate with; the secret is the
// password. A fixed name keeps the operator's job to one value.
const routeUser = "tether"

// startEmbedded starts an in-process server with JetStream in
// DataDir/nats. With ClusterName set it also listens for routes and joins
// its peers as a JetStream cluster; it then returns the token the hub's own
// connection must present (see clientListener).
func startEmbedded(ctx context.Context, opts Options, name string, log *slog.Logger) (*server.Server, string, error) {
	if opts.DataDir == "" {
		return nil, "", errors.New("cluster: Options.DataDir is required for the embedded NATS server")
	}
	store := filepath.Join(opts.DataDir, "nats")
	if err := os.MkdirAll(store, 0o700); err != nil {
		return nil, "", fmt.Errorf("cluster: create store folder: %w", err)
	}
	so := &server.Options{
		// The server name is kept stable across restarts (no random
		// suffix): once embedded servers form a JetStream cluster, peers
		// know each other by it, so it must also differ between nodes.
		ServerName: name,
		DontListen: true,
		JetStream:  true,
		StoreDir:   store,
		// The binary owns signals and logging.
		NoSigs: true,
		NoLog:  true,
	}
	var token string
	if opts.ClusterName != "" {
		var err error
		if token, err = clusterOptions(so, opts); err != nil {
			return nil, "", err
		}
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, "", fmt.Errorf("cluster: embedded NATS options: %w", err)
	}
	sl := &serverLogger{log: log.With("component", "nats-server")}
	srv.SetLoggerV2(sl, false, false, false)
	srv.Start()
	stop := func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	// Start returns early, without an error, when JetStream cannot start
	// (store unreadable, out of space); the reason only reaches the log.
	if !srv.JetStreamEnabled() {
		stop()
		if msg := sl.fatal(); msg != "" {
			return nil, "", fmt.Errorf("cluster: embedded NATS: %s", msg)
		}
		return nil, "", errors.New("cluster: embedded NATS: JetStream did not start")
	}
	wait := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	if wait <= 0 || !srv.ReadyForConnections(wait) {
		stop()
		if msg := sl.fatal(); msg != "" {
			return nil, "", fmt.Errorf("cluster: embedded NATS: %s", msg)
		}
		return nil, "", fmt.Errorf("cluster: embedded NATS not ready within %v", wait.Round(time.Millisecond))
	}
	if opts.ClusterName != "" {
		log.Info("embedded NATS clustering", "cluster", opts.ClusterName, "server", name,
			"routes", srv.ClusterAddr().String(), "peers", strings.Join(peers(opts), ","))
	}
	return srv, token, nil
}

// clusterOptions sets up routes and the client listener of a clustered
// embedded server.
//
// The client listener exists only because nats-server starts routing once
// its client listener is up: with DontListen it never does. It is bound to
// 127.0.0.1 on a random port and requires a random token that only this
// process knows, so it is as closed as no listener at all; the hub itself
// still connects in-process.
func clusterOptions(so *server.Options, opts Options) (token string, err error) {
	if opts.ClusterSecret == "" {
		return "", errors.New("cluster: a cluster secret is required, or anyone who reaches the route port could join")
	}
	host, portStr, err := net.SplitHostPort(opts.ClusterListen)
	if err != nil {
		return "", fmt.Errorf("cluster: cluster listen address %q: %w", opts.ClusterListen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return "", fmt.Errorf("cluster: cluster listen address %q: want a port from 1 to 65535", opts.ClusterListen)
	}
	so.Cluster = server.ClusterOpts{
		Name:     opts.ClusterName,
		Host:     host,
		Port:     port,
		Username: routeUser,
		Password: opts.ClusterSecret,
		// Clients of this cluster are the nodes themselves, in-process:
		// nothing to advertise to them.
		NoAdvertise: true,
	}
	if opts.ClusterTLS != nil {
		// Both ends of a route are nodes: each verifies the other, as
		// nats-server's own cluster tls block does.
		conf := opts.ClusterTLS.Clone()
		conf.ClientAuth = tls.RequireAndVerifyClientCert
		if conf.ClientCAs == nil {
			conf.ClientCAs = conf.RootCAs
		}
		so.Cluster.TLSConfig = conf
		so.Cluster.TLSTimeout = routeTLSTimeout.Seconds()
	}
	for _, p := range peers(opts) {
		so.Routes = append(so.Routes, &url.URL{
			Scheme: "nats-route",
			User:   url.UserPassword(routeUser, opts.ClusterSecret),
			Host:   p,
		})
	}
	token = randomSuffix() + randomSuffix() + randomSuffix() + randomSuffix()
	so.DontListen = false
	so.Host = "127.0.0.1"
	so.Port = server.RANDOM_PORT
	so.Authorization = token
	return token, nil
}

// peers is ClusterPeers without blanks, duplicates and this node's own
// listen address: an operator may hand every node the same list, and the
// JetStream meta group counts each configured route as one more server.
func peers(opts Options) []string {
	var out []string
	for _, p := range opts.ClusterPeers {
		p = strings.TrimSpace(p)
		if p == "" || strings.EqualFold(p, opts.ClusterListen) || slices.Contains(out, p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// replicas picks the replication of new buckets and streams: R3 once the
// cluster has three or more servers (a majority survives one loss), R1
// below that (R2 would stop on the loss of either server). An embedded
// cluster knows its size from its peers. For an external system it is
// guessed from the servers the connection knows of (configured and
// discovered); Options.Replicas overrides the guess.
func replicas(opts Options, nc *nats.Conn) int {
	if opts.Replicas > 0 {
		return opts.Replicas
	}
	n := 1
	switch {
	case opts.URL == "" && opts.ClusterName != "":
		n = 1 + len(peers(opts))
	case opts.URL != "" && nc.ConnectedClusterName() != "":
		n = len(nc.Servers())
	}
	if n >= 3 {
		return 3
	}
	return 1
}

// Replicas is the replication to create the hub's buckets and streams with.
func (c *Cluster) Replicas() int { return c.repl }

// retryAttempt bounds one attempt of Retry, so that a request lost during
// a leader election is tried again rather than waited on.
const retryAttempt = 10 * time.Second

// Retry runs fn until it succeeds or ctx ends, waiting 100 ms and then
// doubling up to 2 s between attempts. A JetStream cluster that is still
// forming answers "no leader" or "insufficient resources" (an R3 bucket
// needs three servers up) for a while: creating the hub's buckets must wait
// that out rather than fail, or settle for fewer replicas. what names the
// work in the log and the error.
func Retry(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, retryAttempt)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (gave up: %w)", what, err, context.Cause(ctx))
		}
		log.Info("retrying", "what", what, "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (gave up: %w)", what, err, context.Cause(ctx))
		case <-t.C:
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}
