package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/hub/node"
)

// TestHealthcheck runs tetherd healthcheck against a hub node run as
// tetherd runs it, with its address given the ways a container gives it:
// the flag, the hub's own TETHER_LISTEN, all addresses (":port"). A hub
// that is gone is unhealthy, and says why.
func TestHealthcheck(t *testing.T) {
	for _, k := range []string{"TETHER_LISTEN", "TETHER_TLS"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{
		DataDir:      filepath.Join(t.TempDir(), "data"),
		HTTP:         ln,
		HostNames:    []string{"hub.example.com"}, // not 127.0.0.1: the check does not verify loopback
		DrainTimeout: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			n.Shutdown(context.Background())
		}
	})
	addr := n.HTTPAddr().String()
	_, port, _ := net.SplitHostPort(addr)

	check := func(args ...string) (int, string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		code := healthcheck(args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	if code, out, errOut := check("--listen", addr); code != 0 || !strings.Contains(out, "https://"+addr+"/healthz: ok") {
		t.Fatalf("--listen %s: exit %d, %q %q", addr, code, out, errOut)
	}
	if code, out, errOut := check("--listen", ":"+port); code != 0 || !strings.Contains(out, "https://127.0.0.1:"+port+"/healthz: ok") {
		t.Fatalf("--listen :%s: exit %d, %q %q", port, code, out, errOut)
	}
	t.Setenv("TETHER_LISTEN", "0.0.0.0:"+port)
	if code, _, errOut := check(); code != 0 {
		t.Fatalf("TETHER_LISTEN=0.0.0.0:%s: exit %d, %q", port, code, errOut)
	}
	// The hub serves TLS: asked for plain HTTP it is unhealthy.
	if code, _, errOut := check("--tls=false"); code != 1 || !strings.Contains(errOut, "http://127.0.0.1:"+port) {
		t.Fatalf("--tls=false against a TLS hub: exit %d, %q", code, errOut)
	}

	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if code, _, errOut := check("--timeout", "2s"); code != 1 || !strings.Contains(errOut, "127.0.0.1:"+port) || !strings.Contains(errOut, "refused") {
		t.Fatalf("a stopped hub: exit %d, %q", code, errOut)
	}
}

func TestHealthcheckErrors(t *testing.T) {
	for _, k := range []string{"TETHER_LISTEN", "TETHER_TLS"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	for _, tc := range []struct {
		args []string
		env  string // TETHER_LISTEN
		want string
	}{
		{[]string{"--listen", "10.0.0.1:443"}, "", "--listen 10.0.0.1:443: the hub listens on 10.0.0.1, not on loopback"},
		{nil, "hub.example.com:443", "TETHER_LISTEN hub.example.com:443: the hub listens on hub.example.com, not on loopback"},
		{[]string{"--listen", "8443"}, "", `--listen "8443": want HOST:PORT`},
		{[]string{"--tsl"}, "", "--tsl"},
		{[]string{"now"}, "", `unexpected argument "now"`},
		{[]string{"--timeout", "soon"}, "", "--timeout"},
	} {
		if tc.env != "" {
			t.Setenv("TETHER_LISTEN", tc.env)
		} else {
			os.Unsetenv("TETHER_LISTEN")
		}
		var stdout, stderr bytes.Buffer
		code := healthcheck(tc.args, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q (TETHER_LISTEN=%q): exit %d, %q; want 1 and %q", tc.args, tc.env, code, stderr.String(), tc.want)
		}
	}
	var stdout bytes.Buffer
	if code := healthcheck([]string{"--help"}, &stdout, &stdout); code != 0 || !strings.Contains(stdout.String(), "HEALTHCHECK") {
		t.Errorf("--help: exit %d, %q", code, stdout.String())
	}
}
