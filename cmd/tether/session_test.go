package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/hub/certs"
	"github.com/tether-io/tether/hub/node"
	"github.com/tether-io/tether/service"
)

// forward and pipe against a real hub node, whose sessions they use unless
// told not to, and a device of the device SDK that echoes streams named
// echo and rejects those named nope.

type sessionHub struct {
	n       *node.Node
	owner   string
	caFile  string
	metrics string // http://127.0.0.1:port/metrics
}

func startSessionHub(t *testing.T) *sessionHub {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mqttLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		mqttLn.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{DataDir: dir, MQTT: mqttLn, Metrics: metricsLn, HostNames: []string{"127.0.0.1"}, DrainTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	h := &sessionHub{n: n, owner: n.OwnerConnectionString(), caFile: filepath.Join(dir, certs.CAFile), metrics: "http://" + n.MetricsAddr().String() + "/metrics"}

	svc, err := service.New(h.owner, service.Options{TLSConfig: n.ClientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	d, err := svc.CreateDevice(ctx, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	dc, err := device.Dial(ctx, svc.DeviceConnectionString(d), device.Options{TLSConfig: n.ClientTLS(), MQTTAddress: n.MQTTAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	go func() {
		for {
			req, err := dc.Accept(context.Background())
			if err != nil {
				return
			}
			if req.Name == "nope" {
				req.Reject()
				continue
			}
			go func() {
				conn, err := req.Accept(context.Background())
				if err != nil {
					return
				}
				defer conn.Close()
				io.Copy(conn, conn)
			}()
		}
	}()
	return h
}

// serviceStreams is the hub's count of streams services opened on
// sessions.
func (h *sessionHub) serviceStreams(t *testing.T) int {
	t.Helper()
	resp, err := http.Get(h.metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var n int
		if _, err := fmt.Sscanf(sc.Text(), `tether_mux_streams_total{kind="service"} %d`, &n); err == nil {
			return n
		}
	}
	return 0
}

// Pipe echoes, and ends on a rejection with the message it gives without
// sessions and nothing on stdout, with sessions and without them.
func TestPipeOnSession(t *testing.T) {
	h := startSessionHub(t)
	for _, env := range []string{"", "0", "off"} {
		t.Setenv("TETHER_SESSIONS", env)
		before := h.serviceStreams(t)
		p := startPipe(t, context.Background(), "dev1", "echo", "--hub", h.owner, "--ca", h.caFile)
		go func() {
			io.WriteString(p.stdin, "hello")
			p.stdin.Close()
		}()
		if got, err := io.ReadAll(p.stdout); err != nil || string(got) != "hello" {
			t.Errorf("TETHER_SESSIONS=%q: stdout %q, %v; want hello then EOF", env, got, err)
		}
		if err := p.wait(t); err != nil {
			t.Errorf("TETHER_SESSIONS=%q: pipe returned %v", env, err)
		}

		p = startPipe(t, context.Background(), "dev1", "nope", "--hub", h.owner, "--ca", h.caFile)
		go io.WriteString(p.stdin, "early bytes")
		// Nothing reads stdout: a pipe that wrote to it would not return.
		const want = `device "dev1" refused stream "nope": not in the agent's --allow list`
		if err := p.wait(t); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("TETHER_SESSIONS=%q: a rejected pipe returned %v; want %q", env, err, want)
		}
		if n := h.serviceStreams(t) - before; (env == "") != (n == 2) {
			t.Errorf("TETHER_SESSIONS=%q: %d streams on sessions", env, n)
		}
	}
	// A value no command reads is an error, as for the agent.
	t.Setenv("TETHER_SESSIONS", "nope")
	p := startPipe(t, context.Background(), "dev1", "echo", "--hub", h.owner, "--ca", h.caFile)
	if err := p.wait(t); err == nil || !strings.Contains(err.Error(), "TETHER_SESSIONS") {
		t.Errorf("TETHER_SESSIONS=nope: pipe returned %v, want an error naming the variable", err)
	}
}

// Forward on a session: a rejected stream closes its connection (EOF, no
// reset) and says why; an accepted one relays both ways with half-close;
// stopping resets what is open.
func TestForwardOnSession(t *testing.T) {
	h := startSessionHub(t)
	for _, flags := range [][]string{nil, {"--no-sessions"}} {
		before := h.serviceStreams(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		t.Setenv("TETHER_HUB", "")
		t.Setenv("TETHER_CA", "")
		done := make(chan error, 2)
		for _, stream := range []string{"nope", "echo"} {
			stderr := newLockedBuffer()
			args := append([]string{"forward", "dev1", stream, "--listen", "127.0.0.1:0", "--hub", h.owner, "--ca", h.caFile}, flags...)
			go func() { done <- run(ctx, args, io.Discard, stderr) }()
			stderr.waitFor(t, "forwarding 127.0.0.1:")
			var port int
			if _, err := fmt.Sscanf(stderr.String(), "forwarding 127.0.0.1:%d", &port); err != nil {
				t.Fatalf("%q: %v", stderr.String(), err)
			}
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if stream == "nope" {
				// The client sends nothing: bytes forward had not read
				// would make the close a reset, on either path.
				if n, err := c.Read(make([]byte, 1)); err != io.EOF {
					t.Errorf("%v: a rejected stream's connection read %d, %v; want EOF", flags, n, err)
				}
				stderr.waitFor(t, `device "dev1" refused stream "nope"`)
				continue
			}
			c.Write([]byte("ping"))
			c.(*net.TCPConn).CloseWrite()
			if got, err := io.ReadAll(c); err != nil || string(got) != "ping" {
				t.Errorf("%v: read %q, %v; want ping then EOF", flags, got, err)
			}
			c2, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			c2.Write([]byte("open"))
			if _, err := io.ReadFull(c2, make([]byte, 4)); err != nil {
				t.Fatal(err)
			}
			cancel()
			for range 2 {
				if err := <-done; err != nil {
					t.Errorf("%v: forward returned %v", flags, err)
				}
			}
			if n, err := c2.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("%v: open connection after return: read %d, %v; want a reset", flags, n, err)
			}
		}
		if n := h.serviceStreams(t) - before; (flags == nil) != (n == 3) {
			t.Errorf("%v: %d streams on sessions", flags, n)
		}
	}
}
