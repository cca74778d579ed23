package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-io/tether/internal/natstest"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// startNATS runs a NATS server with JetStream on loopback until the test
// ends and returns its client URL.
func startNATS(t *testing.T) string {
	t.Helper()
	return natstest.Run(t, nil).ClientURL()
}

// TestDrainRefusalSaysWhereToGo: a draining node refuses new streams and
// device connections. A node that is the whole hub says it is shutting
// down and sends nobody to another node; a node that may have others (on
// an external NATS) says to go to another node.
func TestDrainRefusalSaysWhereToGo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		nats   bool
		stream string // the refused stream's message
		device string // the refused WebSocket connection's body
	}{
		{"single node", false, "This hub is shutting down.", "this hub is shutting down\n"},
		{"node on an external NATS", true, "This hub node is shutting down; retry the request on another node.", "this hub node is shutting down; connect to another node\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o hubOptions
			if tc.nats {
				o.nats = startNATS(t)
			}
			h := startHub(t, o)
			h.addDevice(t, "dev1")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// Nothing to wait for: no stream, no device. Draining stays on.
			if err := h.Server.Drain(ctx, 0); err != nil {
				t.Fatal(err)
			}

			_, err := h.service(t).OpenStream(ctx, "dev1", "ssh")
			var ae *service.APIError
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("stream while draining: %v, want a 503", err)
			}
			if ae.Message != tc.stream {
				t.Errorf("stream refused with %q, want %q", ae.Message, tc.stream)
			}

			c := &http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS}, Timeout: 10 * time.Second}
			resp, err := c.Get("https://" + h.Addr + wire.PathMQTTWebSocket)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || string(body) != tc.device {
				t.Errorf("device connection while draining: %d %q, want 503 %q", resp.StatusCode, body, tc.device)
			}
		})
	}
}

// quickstart is the README's Quickstart block, as a user pastes it.
func quickstart(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n## Quickstart\n")
	if !ok {
		t.Fatal("README.md has no Quickstart section")
	}
	_, rest, ok = strings.Cut(rest, "\n```sh\n")
	block, _, ok2 := strings.Cut(rest, "\n```\n")
	if !ok || !ok2 {
		t.Fatal("the Quickstart has no sh block")
	}
	return block + "\n"
}

// TestQuickstartPastedAsOneBlock runs the README's Quickstart as one paste
// into a shell, every line at once: the hub, the device and the forwarder
// must come up in that order with no one waiting between lines, and bytes
// sent to the forwarded port come back. Only what a test must change is
// changed: the binaries are built already, and the ports are free ones.
// tetherd starts a second late, as on a slow or busy machine: the block
// must not depend on how fast the hub comes up.
func TestQuickstartPastedAsOneBlock(t *testing.T) {
	t.Parallel()
	tools := needTools(t, "bash", "curl", "sleep")
	tetherd, tether := buildBinaries(t)
	home := t.TempDir()
	bin := filepath.Join(home, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(tether, filepath.Join(bin, "tether")); err != nil {
		t.Fatal(err)
	}
	slow := "#!/bin/sh\n" + shellQuote(tools["sleep"]) + " 1\nexec " + shellQuote(tetherd) + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "tetherd"), []byte(slow), 0o755); err != nil {
		t.Fatal(err)
	}
	script := quickstart(t)
	build := "go build -o bin/ ./cmd/tetherd ./cmd/tether\n"
	if !strings.HasPrefix(script, build) {
		t.Fatalf("the Quickstart no longer starts with %q:\n%s", build, script)
	}
	script = strings.TrimPrefix(script, build)
	// The hub's HTTPS port is in the connection strings it writes, so it
	// is chosen here; MQTT and the forwarder take one of their own.
	for from, to := range map[string]string{
		"127.0.0.1:18443": freePort(t), "127.0.0.1:18883": "127.0.0.1:0",
		"127.0.0.1:19400": "127.0.0.1:0", "127.0.0.1:9000": startEcho(t),
	} {
		if !strings.Contains(script, from) {
			t.Fatalf("the Quickstart no longer uses %s:\n%s", from, script)
		}
		script = strings.ReplaceAll(script, from, to)
	}

	cmd := exec.Command(tools["bash"], "-c", script+"wait\n")
	cmd.Dir = home
	cmd.Env = []string{"HOME=" + home, "TMPDIR=" + home, "PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the shell and its background jobs, to stop together
	out := &lockedBuffer{lines: make(chan string, 1024)}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("the pasted Quickstart printed:\n%s", out)
		}
	})

	fwdAddr := p.forwarding(t, 60*time.Second)
	eventually(t, 30*time.Second, "an echo through the forwarded port", func() bool {
		return echoThrough(fwdAddr, "hello through the Quickstart", 5*time.Second) == nil
	})
	// No key on a command line: not the owner's, not the device's.
	data, _ := filepath.Glob(filepath.Join(home, "tmp.*", "hub"))
	if len(data) != 1 {
		t.Fatalf("the hub's data folder: %q", data)
	}
	owner, err := os.ReadFile(filepath.Join(data[0], "owner.connstr"))
	if err != nil {
		t.Fatal(err)
	}
	show, stderr, err := runCmd(t, []string{"TETHER_HUB=" + string(owner), "TETHER_CA=" + filepath.Join(data[0], "ca.pem")}, tether, "devices", "show", "dev1", "--show-keys")
	var d wire.Device
	if err != nil || json.Unmarshal([]byte(show), &d) != nil || d.Authentication.SymmetricKey == nil {
		t.Fatalf("devices show dev1: %v\n%s%s", err, show, stderr)
	}
	noKeyInGroup(t, cmd.Process.Pid, keyOf(t, string(owner)), d.Authentication.SymmetricKey.PrimaryKey)

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the Quickstart's programs did not stop on SIGTERM")
	}
}

// TestAgentAndForwardStartBeforeTheHub: an agent and a forwarder started
// while the hub is down wait for it, saying why, and work once it is up,
// with no restart. A device the hub does not know still stops the agent at
// once.
func TestAgentAndForwardStartBeforeTheHub(t *testing.T) {
	t.Parallel()
	h := startResilienceHub(t)
	devStr := h.addDevice(t, "dev1")
	if err := h.proc.stop(t); err != nil {
		t.Fatalf("tetherd exited with %v", err)
	}

	echo := startEcho(t)
	agent := startProc(t, h.env, h.tether, "agent", "--device", devStr, "--allow", "echo="+echo)
	fwd := startProc(t, h.env, h.tether, "forward", "dev1", "echo", "--listen", "127.0.0.1:0")
	agent.waitLine(t, "cannot connect to the hub yet; retrying", 30*time.Second)
	fwd.waitLine(t, "cannot reach the hub yet; retrying", 30*time.Second)

	h.start(t)
	fwdAddr := fwd.forwarding(t, 60*time.Second)
	waitConnected(t, h.env, h.tether, "dev1")
	eventually(t, 30*time.Second, "an echo through the forwarder", func() bool {
		return echoThrough(fwdAddr, "the hub came up after us", 5*time.Second) == nil
	})
	checkNoSecrets(t, "agent", agent.out.String(), devStr)

	// A refusal is not an outage: an unknown device ends the agent.
	ghost := strings.Replace(devStr, "DeviceId=dev1;", "DeviceId=ghost;", 1)
	_, stderr, err := runCmd(t, h.env, h.tether, "agent", "--device", ghost, "--allow", "echo="+echo)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(stderr, "unauthorized") || !strings.Contains(stderr, `"ghost"`) || strings.Contains(stderr, "retrying") {
		t.Errorf("agent of an unknown device: %v\n%s", err, stderr)
	}
}

// TestTetherdRefusesHalfTheCA: with ca.pem gone and ca-key.pem still
// there, tetherd refuses to start, names the file and writes nothing; with
// ca.pem back it serves the certificate it served before.
func TestTetherdRefusesHalfTheCA(t *testing.T) {
	t.Parallel()
	h := startResilienceHub(t)
	if err := h.proc.stop(t); err != nil {
		t.Fatalf("tetherd exited with %v", err)
	}
	caPath, keyPath := filepath.Join(h.dir, "ca.pem"), filepath.Join(h.dir, "ca-key.pem")
	ca, _ := os.ReadFile(caPath)
	key, _ := os.ReadFile(keyPath)
	if err := os.Rename(caPath, caPath+".away"); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := runCmd(t, nil, h.tetherd, "--data", h.dir, "--listen", h.httpAddr, "--mqtt-listen", "127.0.0.1:0", "--hostname", "127.0.0.1")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(stderr, caPath+" is missing but "+keyPath+" is there") {
		t.Fatalf("tetherd without ca.pem: %v\n%s", err, stderr)
	}
	if k, _ := os.ReadFile(keyPath); string(k) != string(key) {
		t.Fatal("the refused start changed ca-key.pem")
	}
	if _, err := os.Stat(caPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused start wrote ca.pem: %v", err)
	}

	if err := os.Rename(caPath+".away", caPath); err != nil {
		t.Fatal(err)
	}
	h.start(t) // waitHealthy trusts ca.pem: the served certificate chains to it
	if now, _ := os.ReadFile(caPath); string(now) != string(ca) {
		t.Fatal("ca.pem changed")
	}
}
