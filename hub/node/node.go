// Package node runs one hub node: it checks the data folder, sets up TLS,
// joins the cluster, opens the registry and the stream logs, writes the
// owner connection string, serves the listeners and the metrics, and on
// Shutdown stops all of it in order, draining first. cmd/tetherd and the
// end-to-end tests run their nodes through it, so that a test's hub
// starts, serves TLS, drains and stops as the binary does and cannot drift
// from it.
//
// It is a package of its own rather than part of hub: a hub.Server is a
// handler and an MQTT acceptor that owns no listener, no certificate and
// no store, which keeps it testable alone and lets a test build a node of
// an unusual shape; node is the one place that ties those together.
// tetherd keeps what is its own: its flags and the errors that name them,
// binding the listeners before the data folder is touched, the signals and
// the welcome text.
package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/hub/certs"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/hub/streamlog"
	"github.com/tether-io/tether/internal/shell"
	"github.com/tether-io/tether/sas"
)

// DefaultDrainTimeout is Config.DrainTimeout's default, and tetherd's
// --drain-timeout's.
const DefaultDrainTimeout = 30 * time.Second

// OwnerFile is the file in the data folder that holds the owner policy's
// connection string, written at each start.
const OwnerFile = "owner.connstr"

// httpShutdownTimeout is how long requests in flight get once the drain is
// over (or skipped); streams are not requests and end with the hub.
const httpShutdownTimeout = 10 * time.Second

// Config configures a node. Only DataDir is required; every other zero
// field is its default.
type Config struct {
	// DataDir holds the CA and the server certificate, the embedded store
	// and the owner connection string. It is created (0700) when missing;
	// one that other users may read is refused, since it holds keys.
	DataDir string

	// The listeners, bound by the caller so that it can report a port in
	// use before anything is written. Start takes them: Shutdown closes
	// them, and so does a Start that fails.
	HTTP    net.Listener // REST, streams, MQTT over WebSocket; nil: 127.0.0.1, a free port
	MQTT    net.Listener // MQTT over TLS (plain with PlainHTTP); nil: none
	Metrics net.Listener // Prometheus GET /metrics, plain HTTP; nil: none

	// PlainHTTP serves HTTP and MQTT without TLS, for a hub behind a
	// TLS-terminating proxy.
	PlainHTTP bool
	// Certificate is the server's. Nil: the data folder's, made on first
	// start with a CA of its own, for HostNames.
	Certificate *tls.Certificate
	// HostNames are the names the hub answers to and its certificate
	// holds; default localhost.
	HostNames []string
	// PublicURL is what streaming URLs point at and the owner connection
	// string names; default https://{first host name}:{HTTP's port}
	// (http:// with PlainHTTP).
	PublicURL string

	// Cluster is the NATS connection; DataDir and Logger default to the
	// node's.
	Cluster cluster.Options
	// StartTimeout bounds Start: default 60 s, or 5 minutes for a node of
	// a cluster (embedded or external NATS), which waits for its peers
	// and may be started one after another by hand.
	StartTimeout time.Duration
	// DrainTimeout is how long Shutdown lets open streams run on while
	// devices move to other nodes; default DefaultDrainTimeout, negative
	// for none.
	DrainTimeout time.Duration

	// Passed to hub.Options; zero: the hub's defaults.
	Window       time.Duration // a stream's handshake window
	MaxWindow    time.Duration // the longest window a service may ask for
	LogRetention time.Duration // how long stream-log records are kept
	Limits       hub.Limits
	// NoSessions turns mux sessions off (hub.Options.NoSessions): their
	// paths answer 404 and Tether's ends use streams of their own.
	NoSessions bool
	// RecordTerminals records each terminal session the node relays, as
	// asciicast v2 in the data folder's recordings/ (hub/termrec).
	RecordTerminals bool

	// Logger receives the node's log, each part with its "part"
	// attribute; default discard.
	Logger *slog.Logger
}

// Node is one running hub node.
type Node struct {
	cfg       Config // defaults filled in
	log       *slog.Logger
	cl        *cluster.Cluster
	reg       *registry.Registry
	owner     registry.Policy
	ownerStr  string
	srv       *hub.Server
	http      *http.Server
	metrics   *http.Server // nil without Config.Metrics
	httpLn    net.Listener
	mqttLn    net.Listener // nil without Config.MQTT
	clientTLS *tls.Config  // nil with PlainHTTP

	wg       sync.WaitGroup // the serving goroutines
	stopping atomic.Bool    // Shutdown began: a listener that stops is no failure
	failOnce sync.Once
	failed   chan struct{} // closed when a listener stops on its own
	failErr  error         // set before failed is closed

	shutOnce sync.Once
	shutErr  error
}

// Start starts a node as cfg says and returns once it serves. ctx bounds
// the start only (with Config.StartTimeout); the node runs until Shutdown.
// An error leaves nothing running and the listeners closed.
func Start(ctx context.Context, cfg Config) (n *Node, err error) {
	defer func() {
		if err != nil {
			for _, ln := range []net.Listener{cfg.HTTP, cfg.MQTT, cfg.Metrics} {
				if ln != nil {
					ln.Close()
				}
			}
		}
	}()
	if cfg.DataDir == "" {
		return nil, errors.New("node: DataDir is required: it holds the CA key and every device's keys")
	}
	if cfg.HTTP == nil {
		if cfg.HTTP, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if err := checkDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	n = &Node{cfg: cfg, log: cfg.Logger, failed: make(chan struct{})}
	var tlsConf *tls.Config
	if !cfg.PlainHTTP {
		if tlsConf, n.clientTLS, err = serverTLS(cfg); err != nil {
			return nil, err
		}
	}

	startCtx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	if n.cl, err = cluster.Start(startCtx, cfg.Cluster); err != nil {
		return nil, fmt.Errorf("starting NATS: %w", err)
	}
	defer func() {
		if err != nil {
			n.cl.Close()
		}
	}()
	logs, err := n.openState(startCtx)
	if err != nil {
		return nil, fmt.Errorf("opening the registry: %w", err)
	}
	if n.owner, err = n.reg.Policy(startCtx, registry.OwnerPolicy); err != nil {
		return nil, fmt.Errorf("reading the owner policy: %w", err)
	}
	n.ownerStr = sas.ConnectionString{HostName: ConnectionStringHost(cfg.PublicURL), SharedAccessKeyName: n.owner.Name, SharedAccessKey: n.owner.PrimaryKey}.String()
	if err := certs.WriteFileAtomic(n.OwnerFile(), []byte(n.ownerStr+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("writing the owner connection string: %w", err)
	}

	hopts := hub.Options{
		Cluster:      n.cl,
		Registry:     n.reg,
		HostNames:    cfg.HostNames,
		PublicURL:    cfg.PublicURL,
		Window:       cfg.Window,
		MaxWindow:    cfg.MaxWindow,
		LogRetention: cfg.LogRetention,
		Replicas:     n.cl.Replicas(),
		StreamLogs:   logs,
		Limits:       cfg.Limits,
		NoSessions:   cfg.NoSessions,
		Logger:       n.log,
	}
	if cfg.RecordTerminals {
		hopts.RecordTerminals = filepath.Join(cfg.DataDir, "recordings")
	}
	n.srv, err = hub.New(hopts)
	if err != nil {
		return nil, err
	}
	n.serve(tlsConf)
	return n, nil
}

// fill puts in the defaults of the fields left zero.
func (cfg *Config) fill() error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.HostNames) == 0 {
		cfg.HostNames = []string{"localhost"}
	}
	if cfg.PublicURL == "" {
		_, port, err := net.SplitHostPort(cfg.HTTP.Addr().String())
		if err != nil {
			return fmt.Errorf("node: the HTTP listener's address: %w", err)
		}
		scheme := "https"
		if cfg.PlainHTTP {
			scheme = "http"
		}
		cfg.PublicURL = scheme + "://" + net.JoinHostPort(cfg.HostNames[0], port)
	}
	if cfg.Cluster.DataDir == "" {
		cfg.Cluster.DataDir = cfg.DataDir
	}
	if cfg.Cluster.Logger == nil {
		cfg.Cluster.Logger = cfg.Logger.With("part", "cluster")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
		if cfg.Cluster.ClusterName != "" || cfg.Cluster.URL != "" {
			cfg.StartTimeout = 5 * time.Minute
		}
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	return nil
}

// serverTLS is the listeners' TLS and a client's that trusts it: the
// data folder's CA, or the system's roots for a certificate of the
// caller's.
func serverTLS(cfg Config) (server, client *tls.Config, err error) {
	var cert tls.Certificate
	client = &tls.Config{}
	if cfg.Certificate != nil {
		cert = *cfg.Certificate
	} else {
		if cert, err = certs.Ensure(cfg.DataDir, cfg.HostNames); err != nil {
			return nil, nil, fmt.Errorf("TLS certificate: %w", err)
		}
		caFile := filepath.Join(cfg.DataDir, certs.CAFile)
		caPEM, err := os.ReadFile(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("TLS certificate: %w", err)
		}
		client.RootCAs = x509.NewCertPool()
		if !client.RootCAs.AppendCertsFromPEM(caPEM) {
			return nil, nil, fmt.Errorf("TLS certificate: no certificate in %s", caFile)
		}
	}
	server = &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// Asked of every client on both listeners, checked by nobody
		// here: the hub decides per device after CONNECT what an X.509
		// device's certificate is worth, and clients without one (key
		// devices, services) carry on as before.
		ClientAuth: tls.RequestClientCert,
	}
	return server, client, nil
}

// openState opens (creating on a new hub) the registry buckets, the
// default access policies and the stream-log stream, retrying while the
// JetStream cluster is still forming. Every node runs this; the buckets
// and policies are created with create-only operations, so the first node
// to get there makes them and the others find them.
//
// The stream logs are opened here, once, and handed to hub.New: with the
// start's patience (a clustered node's JetStream may take minutes to
// form), and retried, because nodes starting together send the same
// creation at once and JetStream may leave a duplicate of a creation still
// in flight unanswered, which a single attempt would take for a failure.
func (n *Node) openState(ctx context.Context) (*streamlog.Store, error) {
	log := n.log.With("part", "registry")
	err := cluster.Retry(ctx, log, "opening the registry", func(ctx context.Context) error {
		var err error
		n.reg, err = registry.Open(ctx, n.cl.JetStream(), registry.Options{Logger: log, Replicas: n.cl.Replicas()})
		if err != nil {
			return err
		}
		_, err = n.reg.EnsureDefaultPolicies(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	var logs *streamlog.Store
	err = cluster.Retry(ctx, log, "opening the stream logs", func(ctx context.Context) error {
		var err error
		logs, err = streamlog.Open(ctx, n.cl.JetStream(), streamlog.Options{Retention: n.cfg.LogRetention, Replicas: n.cl.Replicas()})
		return err
	})
	return logs, err
}

// serve starts serving the listeners.
func (n *Node) serve(tlsConf *tls.Config) {
	limits := n.srv.Limits()
	n.http = &http.Server{
		Handler:           n.srv,
		ReadHeaderTimeout: limits.HeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    limits.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(n.log.With("part", "http").Handler(), slog.LevelDebug),
	}
	n.httpLn, n.mqttLn = n.cfg.HTTP, n.cfg.MQTT
	if tlsConf != nil {
		n.httpLn = n.srv.TLSListener(n.httpLn, tlsConf) // handshake time limit
		if n.mqttLn != nil {
			n.mqttLn = n.srv.TLSListener(n.mqttLn, tlsConf)
		}
	}
	n.goServe(func() error { return n.http.Serve(n.httpLn) }, true)
	if n.mqttLn != nil {
		n.goServe(func() error { return n.srv.ServeMQTT(n.mqttLn) }, true)
	}
	if mln := n.cfg.Metrics; mln != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", n.srv.MetricsHandler())
		n.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		// Metrics that stop being served cost the hub nothing it serves.
		n.goServe(func() error { return n.metrics.Serve(mln) }, false)
		n.log.Info("metrics", "listen", mln.Addr().String())
	}
}

// goServe runs serve until it returns. When it returns before Shutdown
// and vital is set, the node has failed.
func (n *Node) goServe(serve func() error, vital bool) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		err := serve()
		if !vital || n.stopping.Load() {
			return
		}
		n.failOnce.Do(func() {
			n.failErr = err
			close(n.failed)
		})
	}()
}

// Failed is closed when the HTTP or the MQTT listener stops serving of
// its own accord, not by Shutdown; Err then says why. The node should be
// shut down: Shutdown then skips the drain, there being nothing to drain
// for.
func (n *Node) Failed() <-chan struct{} { return n.failed }

// Err is the error of the listener that failed, or nil.
func (n *Node) Err() error {
	select {
	case <-n.failed:
		return n.failErr
	default:
		return nil
	}
}

// Shutdown stops the node: it closes the MQTT listener, drains for up to
// Config.DrainTimeout (new streams and devices refused, devices told to
// move, open streams left to end; see hub.Server.Drain) or until ctx
// ends, gives requests in flight up to 10 s more, closes the hub, which
// ends the streams left, and closes the cluster connection, which flushes
// the store. It waits for every goroutine Start started and returns the
// errors of closing the hub and the store. Later calls wait for the first
// and return its result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutOnce.Do(func() { n.shutErr = n.shutdown(ctx) })
	return n.shutErr
}

func (n *Node) shutdown(ctx context.Context) error {
	n.stopping.Store(true)
	// Stop taking new work first, let open streams end while devices move
	// to other nodes (lame duck), then end the rest, then flush the store.
	if n.mqttLn != nil {
		n.mqttLn.Close()
	}
	select {
	case <-n.failed:
	default:
		n.drain(ctx)
	}
	// The drain is what ctx may cut short; the requests in flight get
	// their time whatever ended it.
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpShutdownTimeout)
	defer cancel()
	_ = n.http.Shutdown(shutCtx)
	if n.metrics != nil {
		_ = n.metrics.Close()
	}
	err := n.srv.Close()
	n.http.Close()
	n.wg.Wait()
	return errors.Join(err, n.cl.Close())
}

// drain runs the hub's lame-duck mode for up to the drain timeout, or
// until ctx ends. Devices are moved within a quarter of the timeout (at
// most 10 s), leaving the rest for streams to end.
func (n *Node) drain(ctx context.Context) {
	timeout := n.cfg.DrainTimeout
	if timeout <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	spread := min(timeout/4, 10*time.Second)
	if err := n.srv.Drain(ctx, spread); err != nil {
		n.log.Warn("drain ended early; closing what is left", "err", err)
	}
}

// HTTPAddr is the address of the HTTP(S) listener.
func (n *Node) HTTPAddr() net.Addr { return n.httpLn.Addr() }

// MQTTAddr is the address of the MQTT listener, or nil without one.
func (n *Node) MQTTAddr() net.Addr {
	if n.mqttLn == nil {
		return nil
	}
	return n.mqttLn.Addr()
}

// MetricsAddr is the address of the metrics listener, or nil without one.
func (n *Node) MetricsAddr() net.Addr {
	if n.cfg.Metrics == nil {
		return nil
	}
	return n.cfg.Metrics.Addr()
}

// PublicURL is the URL streaming URLs point at.
func (n *Node) PublicURL() string { return n.cfg.PublicURL }

// ClientTLS returns a client TLS configuration that trusts the node's
// certificate: the data folder's CA, or the system's roots for a
// certificate given in Config. Nil with PlainHTTP. Each call returns a
// copy of its own.
func (n *Node) ClientTLS() *tls.Config {
	if n.clientTLS == nil {
		return nil
	}
	return n.clientTLS.Clone()
}

// Server is the node's hub.
func (n *Node) Server() *hub.Server { return n.srv }

// Registry is the node's registry.
func (n *Node) Registry() *registry.Registry { return n.reg }

// Cluster is the node's connection to NATS.
func (n *Node) Cluster() *cluster.Cluster { return n.cl }

// Owner is the owner policy as it was at Start.
func (n *Node) Owner() registry.Policy { return n.owner }

// OwnerConnectionString is the owner policy's connection string as it was
// at Start, naming the public URL's host: what OwnerFile holds.
func (n *Node) OwnerConnectionString() string { return n.ownerStr }

// OwnerFile is the path of the file that holds the owner connection
// string.
func (n *Node) OwnerFile() string { return filepath.Join(n.cfg.DataDir, OwnerFile) }

// ConnectionStringHost is the HostName of the connection strings of a hub
// at publicURL: its host with its port unless that is 443, the one port
// Azure clients assume.
func ConnectionStringHost(publicURL string) string {
	u, _ := url.Parse(publicURL)
	if u.Port() == "443" || (u.Port() == "" && u.Scheme == "https") {
		return u.Hostname()
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "80")
	}
	return u.Host
}

// checkDataDir creates the data folder (0700) on first start, and refuses
// one that others may read: it holds the CA key and every device's keys.
func checkDataDir(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating the data folder: %w", err)
		}
		return os.Chmod(dir, 0o700) // whatever the umask
	}
	if err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("data folder %s is not a folder", dir)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("data folder %s is open to other users (mode %04o) and holds keys; fix it with: chmod 700 %s", dir, perm, shell.Quote(dir))
	}
	return nil
}
