// Command tetherd is the Tether hub. It reads its flags and binds its
// listeners; hub/node runs the node on them (TLS, the cluster, the
// registry, the drain on SIGTERM) and the hub package serves what arrives.
// On its first start it creates its data folder, a CA, a server
// certificate and the access policies, and writes the owner connection
// string; later starts reuse all of them.
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
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/tether-io/tether/hub/certs"
	"github.com/tether-io/tether/hub/node"
	"github.com/tether-io/tether/internal/shell"
	"github.com/tether-io/tether/internal/version"
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
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck(os.Args[2:], os.Stdout, os.Stderr))
	}
	c, err := parseFlags(os.Args[1:], os.Stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) || errors.Is(err, errVersion) {
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

func run(ctx context.Context, c *config, stdout, stderr io.Writer) error {
	log, err := newLogger(c, stderr)
	if err != nil {
		return err
	}
	// Everything a mistaken flag or a port in use makes fail is done before
	// the data folder is created or touched (node.Start's first step), so
	// that such a start leaves nothing behind: the given certificates are
	// read and every listener is bound.
	var cert *tls.Certificate
	if c.tls && c.tlsCert != "" {
		pair, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return fmt.Errorf("%s, %s: %w", c.from("tls-cert"), c.from("tls-key"), err)
		}
		cert = &pair
	}
	copts, err := clusterOptions(c, log.With("part", "cluster"))
	if err != nil {
		return err
	}
	lns, err := listen(c)
	if err != nil {
		return err
	}
	drainTimeout := c.cluster.drainTimeout
	if drainTimeout == 0 {
		drainTimeout = -1 // --drain-timeout 0: none
	}
	n, err := node.Start(ctx, node.Config{
		DataDir:      c.data,
		HTTP:         lns.http,
		MQTT:         lns.mqtt,
		Metrics:      lns.metrics,
		PlainHTTP:    !c.tls,
		Certificate:  cert,
		HostNames:    c.hostnames,
		PublicURL:    c.publicURL,
		Cluster:      copts,
		DrainTimeout: drainTimeout,
		LogRetention: c.retention,
		Limits:       c.limits,
		NoSessions:   !c.sessions,
		Logger:       log,

		RecordTerminals: c.record,
	})
	if err != nil {
		return err
	}

	c.publicURL = n.PublicURL() // named by the node when --listen's port was 0
	printWelcome(stdout, c, n.HTTPAddr(), n.MQTTAddr(), n.OwnerFile())
	log.Info("hub started", "listen", n.HTTPAddr().String(), "public", c.publicURL, "node", n.Cluster().Node(), "version", version.Get().String())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		if drainTimeout > 0 {
			log.Info("draining (a second SIGTERM stops at once)", "timeout", drainTimeout)
		}
	case <-n.Failed():
		runErr = fmt.Errorf("listener failed: %w", n.Err())
	}
	// A second SIGINT or SIGTERM ends the drain.
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := n.Shutdown(sig); err != nil {
		log.Warn("closing the hub", "err", err)
	}
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

// close closes the listeners bound so far.
func (l *listeners) close() {
	for _, ln := range []net.Listener{l.http, l.mqtt, l.metrics} {
		if ln != nil {
			ln.Close()
		}
	}
}

func printWelcome(w io.Writer, c *config, httpAddr, mqttAddr net.Addr, ownerPath string) {
	scheme := "https"
	if !c.tls {
		scheme = "http"
	}
	fmt.Fprintf(w, "Tether hub is running.\n")
	fmt.Fprintf(w, "  REST, streams, MQTT over WebSocket: %s://%s (public URL %s)\n", scheme, httpAddr, c.publicURL)
	if mqttAddr != nil {
		kind := "MQTT over TLS:                     "
		if !c.tls {
			kind = "MQTT (plain, TLS ends before it): "
		}
		fmt.Fprintf(w, "  %s %s\n", kind, mqttAddr)
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
		ca = " --ca " + shell.Quote(filepath.Join(c.data, certs.CAFile))
	}
	fmt.Fprintf(w, "  tether login%s - < %s\n", ca, shell.Quote(ownerPath))
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
