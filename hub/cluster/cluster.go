// Package cluster is the hub's state and routing engine: one NATS connection
// with JetStream, to an embedded in-process server by default or to an
// external NATS system when the hub runs as several nodes.
//
// Everything else in the hub (registry buckets, stream logs, routing of stream
// requests to the node that holds a device's session) goes through the
// connection and JetStream context a Cluster hands out, so a single node
// needs no separate NATS install and a multi-node hub changes only Options.URL.
//
// The embedded server opens no listener: the hub talks to it in-process, so
// there is no port to secure or to collide with. Several nodes can also
// join their embedded servers as one NATS cluster (Options.ClusterName):
// then each listens for routes from its peers, which must present the
// shared secret, and JetStream replicates the hub's state across them.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrClosed is returned by Ready after Close.
var ErrClosed = errors.New("cluster: closed")

// Options configures Start. The zero value is not enough on its own: an
// embedded server needs DataDir, since silently keeping device keys in a
// temporary folder would lose them on reboot.
type Options struct {
	// DataDir holds the embedded JetStream store, under DataDir/nats.
	// Unused when URL is set.
	DataDir string
	// URL of an external NATS system (nats://host:4222, comma-separated for
	// several seeds). Empty: run an embedded in-process server.
	URL string
	// Name of this node; default: the host name. Node() adds a random
	// suffix so two processes with the same name are still told apart.
	Name string
	// Logger receives connection events and the embedded server's log.
	// Default: discard.
	Logger *slog.Logger

	// Embedded clustering (see embedded.go): with ClusterName set, the
	// embedded server listens for NATS routes on ClusterListen and joins
	// the servers at ClusterPeers, so that several nodes share one
	// JetStream without a separate NATS install. Unused when URL is set.
	ClusterName   string
	ClusterListen string   // host:port for routes from the other nodes
	ClusterPeers  []string // host:port of the other nodes' ClusterListen
	// ClusterSecret authorizes routes: a server that does not present it
	// cannot join. Required with ClusterName.
	ClusterSecret string
	// NATSTLS, when set, is the TLS of the connection to an external NATS
	// (URL), for servers whose CA is not in the system's roots or that ask
	// for a client certificate (see ClientTLS). Nil: a tls:// URL uses the
	// system roots, a nats:// one whatever the server asks for.
	NATSTLS *tls.Config

	// ClusterTLS, when set, puts every route in mutual TLS (see RouteTLS):
	// a node then presents its certificate and accepts only peers whose
	// certificates its CA signed. Nil: routes are plain TCP, which carry
	// stream tokens and registry records in the clear.
	ClusterTLS *tls.Config

	// Replicas of the hub's JetStream buckets and streams when they are
	// first created; 0 picks by cluster size (see Replicas).
	Replicas int
}

// Cluster is a live connection to NATS with JetStream.
type Cluster struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	srv    *server.Server // nil with an external URL
	node   string
	name   string
	repl   int
	alone  bool // see Alone
	log    *slog.Logger
	closed chan struct{} // closed by nats.go once the connection is closed

	closeOnce sync.Once
	closeErr  error

	readyMu  sync.Mutex
	readyAt  time.Time
	readyErr error
	shut     bool
}

// readyTTL bounds how often Ready asks JetStream: health probes can come in
// bursts and every answer costs a round trip to the meta leader.
const readyTTL = time.Second

// readyTimeout bounds one JetStream probe in Ready.
const readyTimeout = 2 * time.Second

// Start connects to NATS (starting the embedded server first when opts.URL
// is empty) and returns once JetStream answers. ctx bounds the wait; with an
// external URL Start keeps retrying until JetStream answers or ctx is done,
// because a NATS cluster that is still electing its leader refuses requests
// for a while.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := opts.Name
	if name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "tether"
		}
		name = h
	}
	name = sanitize(name)
	node := name + "-" + randomSuffix()
	log = log.With("node", node)

	c := &Cluster{node: node, name: name, log: log, closed: make(chan struct{}),
		alone: opts.URL == "" && opts.ClusterName == ""}
	connOpts := []nats.Option{
		nats.Name("tetherd " + node),
		nats.MaxReconnects(-1),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", redactURL(nc.ConnectedUrl()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("nats async error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("nats async error", "err", err)
		}),
	}

	var where string
	if opts.URL == "" {
		srv, token, err := startEmbedded(ctx, opts, name, log)
		if err != nil {
			return nil, err
		}
		c.srv = srv
		where = "embedded NATS"
		if opts.ClusterName != "" {
			where = "embedded NATS cluster " + opts.ClusterName
		}
		connOpts = append(connOpts, nats.InProcessServer(srv))
		// No network to wait for here, but the handshake runs on the
		// server's goroutines, which a busy machine can hold back past
		// nats' default of 2 s: the start's own bound applies instead.
		if d, ok := ctx.Deadline(); ok {
			connOpts = append(connOpts, nats.Timeout(max(time.Until(d), nats.DefaultTimeout)))
		}
		if token != "" {
			connOpts = append(connOpts, nats.Token(token))
		}
		nc, err := nats.Connect("", connOpts...)
		if err != nil {
			c.stopServer()
			return nil, fmt.Errorf("cluster: connect to embedded NATS: %w", err)
		}
		c.nc = nc
	} else {
		where = redactURL(opts.URL)
		if opts.NATSTLS != nil {
			connOpts = append(connOpts, nats.Secure(opts.NATSTLS))
		}
		nc, err := connectExternal(ctx, opts.URL, connOpts, log)
		if err != nil {
			return nil, fmt.Errorf("cluster: connect to %s: %w", where, err)
		}
		c.nc = nc
	}

	js, err := jetstream.New(c.nc)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("cluster: JetStream on %s: %w", where, err)
	}
	c.js = js
	if err := waitJetStream(ctx, js, log); err != nil {
		c.Close()
		return nil, fmt.Errorf("cluster: JetStream on %s is not usable: %w", where, err)
	}
	c.repl = replicas(opts, c.nc)
	log.Info("cluster ready", "nats", where, "replicas", c.repl)
	return c, nil
}

// connectExternal dials until the first connection succeeds or ctx ends, so
// that nodes started together with their NATS servers need no start order.
// It logs each new reason for failing, so that a refused certificate or a
// wrong password shows at once rather than when ctx ends.
func connectExternal(ctx context.Context, rawURL string, opts []nats.Option, log *slog.Logger) (*nats.Conn, error) {
	backoff := 100 * time.Millisecond
	var last string
	for {
		nc, err := nats.Connect(rawURL, opts...)
		if err == nil {
			return nc, nil
		}
		if msg := err.Error(); msg != last {
			log.Warn("cannot connect to NATS yet; retrying", "nats", redactURL(rawURL), "err", err)
			last = msg
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (gave up: %w)", err, context.Cause(ctx))
		case <-t.C:
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// waitJetStream asks for account info until it is answered or ctx ends.
// In a cluster only the JetStream meta leader answers, so this also waits
// for a quorum of nodes to be up and to have elected one.
func waitJetStream(ctx context.Context, js jetstream.JetStream, log *slog.Logger) error {
	backoff := 50 * time.Millisecond
	start := time.Now()
	warned := false
	for {
		actx, cancel := context.WithTimeout(ctx, readyTimeout)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		if !warned && time.Since(start) > 5*time.Second {
			// Say why start-up is slow: in a new cluster this node waits
			// for enough peers to elect a JetStream leader.
			log.Info("waiting for JetStream (in a cluster: for a quorum of nodes)", "err", err)
			warned = true
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %w)", err, context.Cause(ctx))
		case <-t.C:
		}
		backoff = min(backoff*2, time.Second)
	}
}

// Conn is the NATS connection. It stays owned by the Cluster: do not close
// it.
func (c *Cluster) Conn() *nats.Conn { return c.nc }

// JetStream is the JetStream context on Conn.
func (c *Cluster) JetStream() jetstream.JetStream { return c.js }

// Node is this process's unique node id: the node name (reduced to a single
// valid NATS subject token) and a random suffix, new at each Start.
func (c *Cluster) Node() string { return c.node }

// Name is this node's name without Node's random suffix: the same across
// restarts, so a restarted node can recognise what its previous life left
// behind.
func (c *Cluster) Name() string { return c.name }

// Alone reports whether this node is the whole hub: an embedded NATS
// server of its own, not clustered, so no other node shares its store. A
// node on an external NATS is never taken to be alone, since any number
// of nodes may share that.
func (c *Cluster) Alone() bool { return c.alone }

// Ready reports whether the connection is up and JetStream answers. A
// broken connection is reported at once; a JetStream answer is cached for a
// second so frequent health checks stay cheap.
func (c *Cluster) Ready() error {
	c.readyMu.Lock()
	defer c.readyMu.Unlock()
	if c.shut {
		return ErrClosed
	}
	if !c.nc.IsConnected() {
		c.readyAt = time.Time{}
		return fmt.Errorf("cluster: NATS connection is %v", c.nc.Status())
	}
	if !c.readyAt.IsZero() && time.Since(c.readyAt) < readyTTL {
		return c.readyErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	_, err := c.js.AccountInfo(ctx)
	if err != nil {
		err = fmt.Errorf("cluster: JetStream: %w", err)
	}
	c.readyAt, c.readyErr = time.Now(), err
	return err
}

// Close drains the connection (letting pending messages and subscription
// handlers finish), then shuts the embedded server down and waits for it, so
// the store is flushed and the folder can be opened again. It is idempotent.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.readyMu.Lock()
		c.shut = true
		c.readyMu.Unlock()
		if c.nc != nil {
			err := c.nc.Drain()
			// Drain refuses while reconnecting and closes the connection
			// instead, which loses nothing a drain could have delivered.
			if err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrConnectionReconnecting) {
				c.closeErr = fmt.Errorf("cluster: drain: %w", err)
				c.nc.Close()
			}
			<-c.closed
		}
		c.stopServer()
		c.log.Info("cluster closed")
	})
	return c.closeErr
}

func (c *Cluster) stopServer() {
	if c.srv != nil {
		c.srv.Shutdown()
		c.srv.WaitForShutdown()
	}
}

// sanitize turns a node name into one NATS subject token, since other parts
// of the hub build subjects from it.
func sanitize(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "tether"
	}
	return b.String()
}

func randomSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// redactURL hides passwords and tokens in NATS URLs before they reach logs
// or errors.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				p = u.Redacted()
			} else {
				u.User = url.User("redacted")
				p = u.String()
			}
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// serverLogger sends the embedded server's log to slog. Its notices are
// start-up chatter, so they go out at debug level; its fatal errors are kept
// for Start to report, since the server does not return them.
type serverLogger struct {
	log *slog.Logger

	mu       sync.Mutex
	lastFail string
}

func (l *serverLogger) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastFail
}

func (l *serverLogger) Noticef(format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...))
}

func (l *serverLogger) Warnf(format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}

func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	l.lastFail = msg
	l.mu.Unlock()
	l.log.Error(msg)
}

func (l *serverLogger) Errorf(format string, v ...any) {
	l.log.Error(fmt.Sprintf(format, v...))
}

func (l *serverLogger) Debugf(format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...))
}

func (l *serverLogger) Tracef(format string, v ...any) {}
