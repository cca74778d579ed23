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
	"strings"
	"syscall"
	"time"

	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/hub/certs"
	"github.com/tether-io/tether/hub/cluster"
	"github.com/tether-io/tether/sas"
)

func newLogger(c *config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("%s %q: want debug, info, warn or error", c.from("log-level"), c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("%s %q: want text or json", c.from("log-format"), c.logFormat)
}

func main() {
	c, err := parseFlags(os.Args[1:], os.Stdout)
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
	// Everything a mistaken flag or a port in use makes fail is done before
	// the data folder is created or touched, so that such a start leaves
	// nothing behind: the given certificates are read and every listener
	// is bound.
	var cert tls.Certificate
	if c.tls && c.tlsCert != "" {
		if cert, err = tls.LoadX509KeyPair(c.tlsCert, c.tlsKey); err != nil {
			return fmt.Errorf("%s, %s: %w", c.from("tls-cert"), c.from("tls-key"), err)
		}
	}
	copts, err := clusterOptions(c, log.With("part", "cluster"))
	if err != nil {
		return err
	}
	lns, err := listen(c)
	if err != nil {
		return err
	}
	defer lns.close()

	if err := checkDataDir(c.data); err != nil {
		return err
	}
	var tlsConf *tls.Config
	if c.tls {
		if c.tlsCert == "" {
			if cert, err = certs.Ensure(c.data, c.hostnames); err != nil {
				return fmt.Errorf("TLS certificate: %w", err)
			}
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

	httpLn := lns.http
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

	mqttLn := lns.mqtt
	if mqttLn != nil {
		if tlsConf != nil {
			mqttLn = srv.TLSListener(mqttLn, tlsConf)
		}
		go func() { errc <- srv.ServeMQTT(mqttLn) }()
	}

	var metricsSrv *http.Server
	if mln := lns.metrics; mln != nil {
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

// listeners are tetherd's sockets, bound before anything else is done.
type listeners struct {
	http, mqtt, metrics net.Listener // mqtt and metrics nil when off
}

// listen binds every listener c asks for and tries the port of the
// routes between nodes, which the embedded NATS server binds itself later.
// An error names the flag and the address.
func listen(c *config) (*listeners, error) {
	l := &listeners{}
	var err error
	bind := func(name, addr string) net.Listener {
		if err != nil {
			return nil
		}
		ln, e := net.Listen("tcp", addr)
		if e != nil {
			var oe *net.OpError
			if errors.As(e, &oe) {
				e = oe.Err // "bind: address already in use"
			}
			err = fmt.Errorf("%s %s: %w", c.from(name), addr, e)
		}
		return ln
	}
	l.http = bind("listen", c.listen)
	if c.mqttListen != "off" {
		l.mqtt = bind("mqtt-listen", c.mqttListen)
	}
	switch c.metrics {
	case "off":
	case "on":
		l.metrics = bind("metrics-listen", "127.0.0.1:9464")
	default:
		l.metrics = bind("metrics-listen", c.metrics)
	}
	if c.cluster.name != "" {
		if ln := bind("cluster-listen", c.cluster.listen); ln != nil {
			ln.Close()
		}
	}
	if err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// close closes the listeners; those already served are closed again,
// harmlessly.
func (l *listeners) close() {
	for _, ln := range []net.Listener{l.http, l.mqtt, l.metrics} {
		if ln != nil {
			ln.Close()
		}
	}
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
	// No key on a command line, where every local user sees it in ps:
	// the owner's goes to tether login on stdin, the device's to a file.
	ca := ""
	if c.tls && c.tlsCert == "" {
		ca = " --ca " + shellQuote(filepath.Join(c.data, certs.CAFile))
	}
	fmt.Fprintf(w, "  tether login%s - < %s\n", ca, shellQuote(ownerPath))
	fmt.Fprintf(w, "  tether devices add dev1 --out dev1.connstr\n")
	fmt.Fprintf(w, "  tether agent --device-file dev1.connstr%s --allow ssh=127.0.0.1:22   # on the device\n", ca)
	fmt.Fprintf(w, "  tether forward dev1 ssh --listen 127.0.0.1:2222   # where you are\n")
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
