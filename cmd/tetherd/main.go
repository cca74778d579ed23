// Command tetherd is the Tether hub. It owns the listeners and TLS; the
// hub package serves what arrives on them. On its first start it creates
// its data folder, a CA, a server certificate and the access policies, and
// writes the owner connection string; later starts reuse all of them.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/hub/certs"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/sas"
)

type config struct {
	data       string
	listen     string
	mqttListen string
	hostnames  []string
	publicURL  string
	tlsCert    string
	tlsKey     string
	tls        bool
	natsURL    string
	logFormat  string
	logLevel   string
	retention  time.Duration
	metrics    string
	cluster    clusterConfig // cluster.go
	limits     hub.Limits    // limits.go
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("tetherd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var names string
	fs.StringVar(&c.data, "data", env("TETHER_DATA", "./tether-data"), "data folder (env TETHER_DATA)")
	fs.StringVar(&c.listen, "listen", env("TETHER_LISTEN", ":8443"), "HTTPS address: REST, streams, MQTT over WebSocket (env TETHER_LISTEN)")
	fs.StringVar(&c.mqttListen, "mqtt-listen", env("TETHER_MQTT_LISTEN", ":8883"), "MQTT over TLS address, or off (env TETHER_MQTT_LISTEN)")
	fs.StringVar(&names, "hostname", env("TETHER_HOSTNAME", "localhost"), "host names for the certificate and URLs, comma-separated (env TETHER_HOSTNAME)")
	fs.StringVar(&c.publicURL, "public-url", env("TETHER_PUBLIC_URL", ""), "URL streaming URLs point at; default https://{first host name}:{listen port} (env TETHER_PUBLIC_URL)")
	fs.StringVar(&c.tlsCert, "tls-cert", env("TETHER_TLS_CERT", ""), "certificate PEM file instead of the generated one (env TETHER_TLS_CERT)")
	fs.StringVar(&c.tlsKey, "tls-key", env("TETHER_TLS_KEY", ""), "key PEM file for --tls-cert (env TETHER_TLS_KEY)")
	tlsOn, _ := strconv.ParseBool(env("TETHER_TLS", "true"))
	fs.BoolVar(&c.tls, "tls", tlsOn, "serve TLS; false only behind a TLS-terminating proxy (env TETHER_TLS)")
	fs.StringVar(&c.natsURL, "nats", env("TETHER_NATS", ""), "external NATS URLs, comma-separated (nats://a:4222,nats://b:4222); default an embedded server (env TETHER_NATS)")
	fs.StringVar(&c.logFormat, "log-format", env("TETHER_LOG_FORMAT", "text"), "text or json (env TETHER_LOG_FORMAT)")
	fs.StringVar(&c.logLevel, "log-level", env("TETHER_LOG_LEVEL", "info"), "debug, info, warn or error (env TETHER_LOG_LEVEL)")
	retention, err := time.ParseDuration(env("TETHER_LOG_RETENTION", "168h"))
	if err != nil {
		return nil, fmt.Errorf("TETHER_LOG_RETENTION: %w", err)
	}
	fs.StringVar(&c.metrics, "metrics-listen", env("TETHER_METRICS_LISTEN", "off"), "Prometheus /metrics address: off, on (127.0.0.1:9464) or ADDR (env TETHER_METRICS_LISTEN)")
	fs.DurationVar(&c.retention, "log-retention", retention, "how long stream-log records are kept (env TETHER_LOG_RETENTION)")
	finishLimits := addLimitFlags(fs, &c.limits)
	finishCluster, err := addClusterFlags(fs, &c.cluster)
	if err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := finishLimits(); err != nil {
		return nil, err
	}
	if err := finishCluster(); err != nil {
		return nil, err
	}
	if err := c.cluster.validate(c.natsURL); err != nil {
		return nil, err
	}
	c.hostnames = splitNames(names)
	if len(c.hostnames) == 0 {
		return nil, errors.New("--hostname needs at least one name")
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if c.publicURL == "" {
		_, port, err := net.SplitHostPort(c.listen)
		if err != nil {
			return nil, fmt.Errorf("--listen %q: %w", c.listen, err)
		}
		c.publicURL = "https://" + net.JoinHostPort(c.hostnames[0], port)
	}
	u, err := url.Parse(c.publicURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("--public-url %q must be https://host[:port]", c.publicURL)
	}
	return c, nil
}

func newLogger(c *config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
}

func main() {
	c, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "tetherd:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tetherd:", err)
		os.Exit(1)
	}
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
		return fmt.Errorf("data folder %s is open to other users (mode %04o) and holds keys; fix it with: chmod 700 %s", dir, perm, shellQuote(dir))
	}
	return nil
}

// connStrHost is the HostName of connection strings: the public host with
// its port unless that is 443, the one port Azure clients assume.
func connStrHost(publicURL string) string {
	u, _ := url.Parse(publicURL)
	if u.Port() == "443" || (u.Port() == "" && u.Scheme == "https") {
		return u.Hostname()
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "80")
	}
	return u.Host
}

func run(ctx context.Context, c *config, stdout, stderr io.Writer) error {
	log, err := newLogger(c, stderr)
	if err != nil {
		return err
	}
	if err := checkDataDir(c.data); err != nil {
		return err
	}

	var tlsConf *tls.Config
	if c.tls {
		var cert tls.Certificate
		if c.tlsCert != "" {
			cert, err = tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		} else {
			cert, err = certs.Ensure(c.data, c.hostnames)
		}
		if err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
		tlsConf = &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			// Asked of every client on both listeners, checked by nobody
			// here: the hub decides per device after CONNECT what an
			// X.509 device's certificate is worth, and clients without
			// one (key devices, services) carry on as before.
			ClientAuth: tls.RequestClientCert,
		}
	}

	startCtx, cancel := context.WithTimeout(ctx, startTimeout(c))
	defer cancel()
	copts, err := clusterOptions(c, log.With("part", "cluster"))
	if err != nil {
		return err
	}
	cl, err := cluster.Start(startCtx, copts)
	if err != nil {
		return fmt.Errorf("starting NATS: %w", err)
	}
	defer cl.Close()
	reg, err := openState(startCtx, cl, c.retention, log.With("part", "registry"))
	if err != nil {
		return fmt.Errorf("opening the registry: %w", err)
	}
	owner, err := reg.Policy(startCtx, "iothubowner")
	if err != nil {
		return fmt.Errorf("reading the owner policy: %w", err)
	}
	ownerStr := sas.ConnectionString{HostName: connStrHost(c.publicURL), SharedAccessKeyName: owner.Name, SharedAccessKey: owner.PrimaryKey}.String()
	ownerPath := filepath.Join(c.data, "owner.connstr")
	if err := certs.WriteFileAtomic(ownerPath, []byte(ownerStr+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the owner connection string: %w", err)
	}

	srv, err := hub.New(hub.Options{
		Cluster:      cl,
		Registry:     reg,
		HostNames:    c.hostnames,
		PublicURL:    c.publicURL,
		LogRetention: c.retention,
		Replicas:     cl.Replicas(),
		Limits:       c.limits,
		Logger:       log,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	httpLn, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: srv.Limits().HeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    srv.Limits().MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.With("part", "http").Handler(), slog.LevelDebug),
	}
	if tlsConf != nil {
		httpLn = srv.TLSListener(httpLn, tlsConf) // handshake time limit
	}
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(httpLn) }()

	var mqttLn net.Listener
	if c.mqttListen != "off" {
		mqttLn, err = net.Listen("tcp", c.mqttListen)
		if err != nil {
			hs.Close()
			return fmt.Errorf("--mqtt-listen: %w", err)
		}
		if tlsConf != nil {
			mqttLn = srv.TLSListener(mqttLn, tlsConf)
		}
		go func() { errc <- srv.ServeMQTT(mqttLn) }()
	}

	var metricsSrv *http.Server
	switch c.metrics {
	case "off", "":
	default:
		addr := c.metrics
		if addr == "on" {
			addr = "127.0.0.1:9464"
		}
		mln, err := net.Listen("tcp", addr)
		if err != nil {
			hs.Close()
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", srv.MetricsHandler())
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = metricsSrv.Serve(mln) }()
		log.Info("metrics", "listen", mln.Addr().String())
	}

	printWelcome(stdout, c, httpLn.Addr(), mqttLn, ownerPath)
	log.Info("hub started", "listen", httpLn.Addr().String(), "public", c.publicURL, "node", cl.Node())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-errc:
		runErr = fmt.Errorf("listener failed: %w", err)
	}
	// Stop taking new work first, let open streams end while devices move
	// to other nodes (lame duck), then end the rest, then flush the store
	// (deferred cl.Close).
	if mqttLn != nil {
		mqttLn.Close()
	}
	if runErr == nil {
		drain(srv, c.cluster.drainTimeout, log)
	}
	shutCtx, cancelShut := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelShut()
	_ = hs.Shutdown(shutCtx)
	if metricsSrv != nil {
		_ = metricsSrv.Close()
	}
	if err := srv.Close(); err != nil {
		log.Warn("closing the hub", "err", err)
	}
	hs.Close()
	return runErr
}

func printWelcome(w io.Writer, c *config, httpAddr net.Addr, mqttLn net.Listener, ownerPath string) {
	scheme := "https"
	if !c.tls {
		scheme = "http"
	}
	fmt.Fprintf(w, "Tether hub is running.\n")
	fmt.Fprintf(w, "  REST, streams, MQTT over WebSocket: %s://%s (public URL %s)\n", scheme, httpAddr, c.publicURL)
	if mqttLn != nil {
		kind := "MQTT over TLS:                     "
		if !c.tls {
			kind = "MQTT (plain, TLS ends before it): "
		}
		fmt.Fprintf(w, "  %s %s\n", kind, mqttLn.Addr())
	}
	if c.tls && c.tlsCert == "" {
		fmt.Fprintf(w, "  CA certificate:                     %s\n", filepath.Join(c.data, certs.CAFile))
	}
	fmt.Fprintf(w, "  Owner connection string:            %s\n", ownerPath)
	fmt.Fprintf(w, "\nNext:\n")
	ca := ""
	if c.tls && c.tlsCert == "" {
		ca = " TETHER_CA=" + shellQuote(filepath.Join(c.data, certs.CAFile))
	}
	fmt.Fprintf(w, "  export TETHER_HUB=\"$(cat %s)\"%s\n", shellQuote(ownerPath), ca)
	fmt.Fprintf(w, "  DEV=$(tether devices add dev1)\n")
	fmt.Fprintf(w, "  tether agent --device \"$DEV\" --allow ssh=127.0.0.1:22      # on the device\n")
	fmt.Fprintf(w, "  tether forward dev1 ssh --listen 127.0.0.1:2222            # where you are\n")
}

// splitNames parses --hostname: comma-separated, trimmed, no duplicates.
func splitNames(s string) []string {
	var out []string
	for n := range strings.SplitSeq(s, ",") {
		if n = strings.TrimSpace(n); n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func shellQuote(s string) string {
	if !strings.ContainsAny(s, " \t'\"$`\\*?[]{}()<>|&;#~!") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
