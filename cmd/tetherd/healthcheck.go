package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tether-io/tether/internal/cliflag"
)

const healthcheckHelp = `usage: tetherd healthcheck [--listen ADDR] [--tls=false] [--timeout 5s]

Asks the hub running on this machine for GET /healthz and exits 0 when it
answers 200, 1 otherwise, saying why. A container's HEALTHCHECK runs it: an
image FROM scratch has no curl. It reads the hub's own --listen and --tls
(TETHER_LISTEN, TETHER_TLS), so in the hub's environment it needs no flag.
It dials the listen port on loopback (127.0.0.1, or ::1 for [::]) and does
not check the hub's certificate there, which names the hub's public host
names, not 127.0.0.1: nothing between the two ends to check it against.

`

// healthcheck runs tetherd healthcheck and returns its exit code: 0
// healthy, 1 not, or not asked right (Docker reserves 2).
func healthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tetherd healthcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	listen := fs.String("listen", ":8443", "`ADDR` the hub listens on (its --listen); checked on loopback")
	useTLS := fs.Bool("tls", true, "the hub serves TLS (its --tls)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	// The hub's own variables, so that it runs in the hub's environment
	// with no flag.
	cliflag.Env(fs, "listen", envPrefix+"LISTEN")
	cliflag.Env(fs, "tls", envPrefix+"TLS")
	envErr := cliflag.ApplyEnv(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			io.WriteString(stdout, healthcheckHelp)
			cliflag.PrintFlags(stdout, fs, cliflag.Names(fs))
			return 0
		}
		fmt.Fprintf(stderr, "tetherd healthcheck: %v (tetherd healthcheck --help)\n", cliflag.Explain(fs, err))
		return 1
	}
	if envErr == nil && fs.NArg() > 0 {
		envErr = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if envErr != nil {
		fmt.Fprintf(stderr, "tetherd healthcheck: %v\n", envErr)
		return 1
	}
	url, err := healthURL(cliflag.Source(fs, "listen"), *listen, *useTLS)
	if err != nil {
		fmt.Fprintf(stderr, "tetherd healthcheck: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := checkHealth(ctx, url); err != nil {
		fmt.Fprintf(stderr, "tetherd healthcheck: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", url)
	return 0
}

// healthURL is where the hub listening on listen answers /healthz on
// this machine. from names where listen came from, for its errors.
func healthURL(from, listen string, useTLS bool) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("%s %q: want HOST:PORT", from, listen)
	}
	switch ip := net.ParseIP(host); {
	case host == "" || host == "0.0.0.0":
		host = "127.0.0.1"
	case host == "::":
		host = "::1"
	case host == "localhost":
		host = "127.0.0.1"
	case ip == nil || !ip.IsLoopback():
		// A certificate for a public name would need checking, and a hub
		// reached so is not necessarily this one.
		return "", fmt.Errorf("%s %s: the hub listens on %s, not on loopback; check https://%s/healthz from where it is reached (curl --cacert ca.pem)", from, listen, host, net.JoinHostPort(host, port))
	}
	scheme := "https"
	if !useTLS {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/healthz", nil
}

// checkHealth GETs url, a loopback address, and wants 200.
func checkHealth(ctx context.Context, url string) error {
	client := &http.Client{Transport: &http.Transport{
		// Loopback only (healthURL): the hub's certificate names its public
		// host names, and no one sits between the two ends.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
		Proxy:           nil, // an HTTPS_PROXY must not see a loopback check
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
