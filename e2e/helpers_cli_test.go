package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// procHub is tetherd running as a process on a fresh data folder, with
// the environment that points the tether CLI at it.
type procHub struct {
	tether string   // absolute path of the tether binary
	env    []string // TETHER_HUB and TETHER_CA
	dir    string   // the hub's data folder
	addr   string   // its HTTPS listener
	hub    *proc
}

func startProcHub(t *testing.T) *procHub {
	t.Helper()
	tetherd, tether := buildBinaries(t)
	return startProcHubOf(t, tetherd, tether)
}

// startProcHubOf is startProcHub with binaries of the test's own, and
// tetherd's flags beyond the data folder and listeners.
func startProcHubOf(t *testing.T, tetherd, tether string, flags ...string) *procHub {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	httpAddr := freePort(t)
	args := append([]string{"--data", dir, "--listen", httpAddr, "--mqtt-listen", "127.0.0.1:0", "--hostname", "127.0.0.1"}, flags...)
	hub := startProc(t, nil, tetherd, args...)
	waitHealthy(t, dir, httpAddr, hub)
	owner, err := os.ReadFile(filepath.Join(dir, "owner.connstr"))
	if err != nil {
		t.Fatal(err)
	}
	return &procHub{
		addr:   httpAddr,
		tether: tether,
		env:    []string{"TETHER_HUB=" + strings.TrimSpace(string(owner)), "TETHER_CA=" + filepath.Join(dir, "ca.pem")},
		dir:    dir,
		hub:    hub,
	}
}

// startAgent registers device id and runs `tether agent` for it with the
// given --allow entries, returning once the hub shows it connected.
func (h *procHub) startAgent(t *testing.T, id string, allow ...string) *proc {
	t.Helper()
	devStr, stderr, err := runCmd(t, h.env, h.tether, "devices", "add", id)
	if err != nil {
		t.Fatalf("devices add %s: %v: %s", id, err, stderr)
	}
	args := []string{"agent", "--device", strings.TrimSpace(devStr)}
	for _, a := range allow {
		args = append(args, "--allow", a)
	}
	agent := startProc(t, h.env, h.tether, args...)
	waitConnected(t, h.env, h.tether, id)
	return agent
}

// startForward runs `tether forward device stream` on a loopback port of
// its choosing and returns that address once it accepts.
func (h *procHub) startForward(t *testing.T, device, stream string) string {
	t.Helper()
	fwd := startProc(t, h.env, h.tether, "forward", device, stream, "--listen", "127.0.0.1:0")
	return fwd.forwarding(t, 30*time.Second)
}

// toolResult is what a finished process left behind.
type toolResult struct {
	stdout, stderr []byte
	err            error
	took           time.Duration
}

// runTool runs name with args, the environment plus env, stdin (nil for
// none) and a bound of timeout on the whole run, killing it past that.
func runTool(t *testing.T, timeout time.Duration, env []string, stdin io.Reader, name string, args ...string) toolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	// A child that outlives name (ssh's ProxyCommand) may hold the output
	// pipes open; Wait gives up on them after this instead of hanging.
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return toolResult{stdout: o.Bytes(), stderr: e.Bytes(), err: err, took: time.Since(start)}
}

// mustSucceed fails the test with everything the process printed unless
// it exited 0.
func (r toolResult) mustSucceed(t *testing.T, what string) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: %v after %v\nstdout:\n%s\nstderr:\n%s", what, r.err, r.took.Round(time.Millisecond), r.stdout, r.stderr)
	}
	t.Logf("%s: %v", what, r.took.Round(time.Millisecond))
}

// fileSHA256 hashes the file at path.
func fileSHA256(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// needTools returns the absolute path of each program. A missing one
// skips the test, or fails it under TETHER_E2E_REQUIRE=1 (CI), where a
// skip would hide that the test never ran.
func needTools(t *testing.T, names ...string) map[string]string {
	t.Helper()
	paths := make(map[string]string, len(names))
	var missing []string
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			// sshd lives in sbin, which is often off a user's PATH.
			p, err = exec.LookPath("/usr/sbin/" + n)
		}
		if err != nil {
			missing = append(missing, n)
			continue
		}
		if p, err = filepath.Abs(p); err != nil {
			t.Fatal(err)
		}
		paths[n] = p
	}
	if len(missing) > 0 {
		msg := "missing " + strings.Join(missing, ", ") + " (.ci/run installs it: openssh-server, openssh-client, nginx-light)"
		if os.Getenv("TETHER_E2E_REQUIRE") == "1" {
			t.Fatal(msg + "; TETHER_E2E_REQUIRE=1 forbids skipping")
		}
		t.Skip(msg)
	}
	return paths
}

// shellQuote quotes s for sh, as ssh runs a ProxyCommand and a remote
// command through the user's shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
