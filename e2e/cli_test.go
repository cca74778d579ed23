package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

// binaries are built once per test run.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func buildBinaries(t *testing.T) (tetherd, tether string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tether-e2e-bin-")
		if buildErr != nil {
			return
		}
		for _, cmd := range []string{"tetherd", "tether"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, cmd), "github.com/tether-io/tether/cmd/"+cmd).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", cmd, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "tetherd"), filepath.Join(binDir, "tether")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// freePort returns a loopback address nobody listens on right now, for a
// program that must be told its port: tetherd's --listen, whose port is in
// the public URL and the connection strings it writes before it serves,
// sshd, nginx. Another listener may take the port before the program
// binds it, so whatever can listen on port 0 and say where does that
// instead (tetherd's --mqtt-listen, tether forward, listeners in this
// process).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// deadAddr returns a loopback address that refuses connections until the
// test ends. The client end of a connection holds its port, and nothing
// listens behind it, so no listener of another test can be given that
// port meanwhile, as it can a port freePort found free.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.LocalAddr().String()
}

// proc is a binary running in the background with its output captured.
type proc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	// lines receives each complete line as it is written.
	lines chan string
	part  string
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	l.part += string(p)
	for {
		i := strings.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		select {
		case l.lines <- l.part[:i]:
		default:
		}
		l.part = l.part[i+1:]
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startProc(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	buf := &lockedBuffer{lines: make(chan string, 1024)}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: buf, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), buf.String())
		}
	})
	return p
}

// waitLine waits for an output line containing s and returns it.
func (p *proc) waitLine(t *testing.T, s string, d time.Duration) string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case line := <-p.out.lines:
			if strings.Contains(line, s) {
				return line
			}
		case err := <-p.done:
			p.done <- err
			t.Fatalf("process exited (%v) before printing %q", err, s)
		case <-timeout:
			t.Fatalf("no line with %q within %v", s, d)
		}
	}
}

// forwardingRE finds where tether forward listens in its "forwarding" line,
// plain ("forwarding 127.0.0.1:PORT → dev1/echo") or logged
// ("msg=forwarding listen=127.0.0.1:PORT ...").
var forwardingRE = regexp.MustCompile(`forwarding\b.*?(127\.0\.0\.1:[0-9]+)`)

// forwarding waits until tether forward, started with --listen
// 127.0.0.1:0, says it is forwarding, and returns the address it listens
// on.
func (p *proc) forwarding(t *testing.T, d time.Duration) string {
	t.Helper()
	line := p.waitLine(t, "forwarding", d)
	m := forwardingRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no loopback address in tether forward's line %q", line)
	}
	return m[1]
}

// stop sends SIGTERM and returns the exit error.
func (p *proc) stop(t *testing.T) error {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("process did not exit within 30 s of SIGTERM")
		return nil
	}
}

func runCmd(t *testing.T, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// serveTCP accepts connections on loopback until the test ends and hands
// each to handle, which owns it.
func serveTCP(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

// startEcho serves TCP echo on loopback.
func startEcho(t *testing.T) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(c, c)
	})
}

// waitHealthy polls /healthz until it answers 200, trusting the hub's CA
// once it exists, as the README's curl does.
func waitHealthy(t *testing.T, dir, addr string, hub *proc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		select {
		case err := <-hub.done:
			hub.done <- err
			t.Fatalf("tetherd exited: %v", err)
		case <-tick.C:
		}
		pem, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
		if err != nil {
			continue
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := c.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
	}
	t.Fatal("hub not healthy within 60 s")
}

// TestCommandsAsAUserRunsThem follows the README: start tetherd on a new
// data folder, add a device, run the agent and a forwarder, and push data
// through the forwarded port.
func TestCommandsAsAUserRunsThem(t *testing.T) {
	t.Parallel()
	tetherd, tether := buildBinaries(t)
	dir := filepath.Join(t.TempDir(), "data") // does not exist yet
	httpAddr := freePort(t)
	echoAddr := startEcho(t)

	hub := startProc(t, nil, tetherd, "--data", dir, "--listen", httpAddr, "--mqtt-listen", "127.0.0.1:0", "--hostname", "127.0.0.1")
	waitHealthy(t, dir, httpAddr, hub)
	for _, f := range []string{"owner.connstr", "ca-key.pem", "server-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v", f, st.Mode(), err)
		}
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("data folder mode %v", st.Mode().Perm())
	}
	owner, err := os.ReadFile(filepath.Join(dir, "owner.connstr"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(owner), "HostName="+httpAddr+";") {
		t.Fatalf("owner connection string lacks the port: %s", owner)
	}
	env := []string{"TETHER_HUB=" + strings.TrimSpace(string(owner)), "TETHER_CA=" + filepath.Join(dir, "ca.pem")}

	devStr, stderr, err := runCmd(t, env, tether, "devices", "add", "dev1")
	if err != nil {
		t.Fatalf("devices add: %v: %s", err, stderr)
	}
	devStr = strings.TrimSpace(devStr)
	if !strings.HasPrefix(devStr, "HostName="+httpAddr+";DeviceId=dev1;SharedAccessKey=") || strings.Contains(devStr, "\n") {
		t.Fatalf("devices add printed %q", devStr)
	}

	agent := startProc(t, env, tether, "agent", "--device", devStr, "--allow", "echo="+echoAddr)
	fwd := startProc(t, env, tether, "forward", "dev1", "echo", "--listen", "127.0.0.1:0")
	fwdAddr := fwd.forwarding(t, 30*time.Second)
	waitConnected(t, env, tether, "dev1")

	// Bytes written to the forwarded port come back unchanged.
	if echoRandom(t, fwdAddr, 8<<20, "bytes through forward"); t.Failed() {
		t.FailNow()
	}

	// list and show speak of the connected device.
	list, _, err := runCmd(t, env, tether, "devices", "list")
	if err != nil || !strings.Contains(list, "dev1") || !strings.Contains(list, "Connected") {
		t.Fatalf("devices list: %v\n%s", err, list)
	}
	var devs []wire.Device
	js, _, err := runCmd(t, env, tether, "devices", "list", "--json")
	if err != nil || json.Unmarshal([]byte(js), &devs) != nil || len(devs) != 1 {
		t.Fatalf("devices list --json: %v\n%s", err, js)
	}

	// Errors: one clear line, non-zero exit.
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"devices", "add", "dev1"}, env, "exists"},
		{[]string{"devices", "show", "ghost"}, env, "not found"},
		{[]string{"forward", "ghost", "echo", "--listen", "127.0.0.1:0"}, env, "not found"},
		{[]string{"devices", "list"}, []string{"TETHER_HUB=" + strings.TrimSpace(string(owner)), "TETHER_CA="}, "certificate"},
		{[]string{"devices", "list"}, []string{"TETHER_HUB=nonsense", "TETHER_CA=" + filepath.Join(dir, "ca.pem")}, "connection string"},
		{[]string{"devices", "list"}, []string{"TETHER_HUB=", "TETHER_CA="}, "connection string"},
		{[]string{"devices", "list"}, []string{"TETHER_HUB=HostName=127.0.0.1:1;SharedAccessKeyName=x;SharedAccessKey=eA==", "TETHER_CA="}, "127.0.0.1:1"},
	} {
		_, stderr, err := runCmd(t, tc.env, tether, tc.args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("tether %v: exit %v, want non-zero", tc.args, err)
		}
		if !strings.Contains(strings.ToLower(stderr), tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 1 {
			t.Errorf("tether %v: stderr %q, want one line mentioning %q", tc.args, stderr, tc.want)
		}
	}

	// Device operations on a second device.
	if _, stderr, err := runCmd(t, env, tether, "devices", "add", "dev2"); err != nil {
		t.Fatalf("devices add dev2: %v: %s", err, stderr)
	}
	rotated, stderr, err := runCmd(t, env, tether, "devices", "rotate-key", "dev2", "--secondary")
	if err != nil || !strings.HasPrefix(rotated, "HostName="+httpAddr+";DeviceId=dev2;SharedAccessKey=") {
		t.Fatalf("rotate-key: %v %q %s", err, rotated, stderr)
	}
	for _, op := range []string{"disable", "enable"} {
		if _, stderr, err := runCmd(t, env, tether, "devices", op, "dev2"); err != nil {
			t.Fatalf("devices %s: %v: %s", op, err, stderr)
		}
		out, _, _ := runCmd(t, env, tether, "devices", "list")
		want := map[string]string{"disable": "disabled", "enable": "enabled"}[op]
		if !regexp.MustCompile(`(?m)^dev2\s+` + want + `\s`).MatchString(out) {
			t.Fatalf("after devices %s, list says:\n%s", op, out)
		}
	}

	// SIGTERM: everyone exits cleanly.
	for name, p := range map[string]*proc{"forward": fwd, "agent": agent, "tetherd": hub} {
		if err := p.stop(t); err != nil {
			t.Errorf("%s exited with %v after SIGTERM", name, err)
		}
	}
}

// waitConnected waits until the registry shows the device connected.
func waitConnected(t *testing.T, env []string, tether, id string) {
	t.Helper()
	eventually(t, 30*time.Second, id+" connected", func() bool {
		out, _, err := runCmd(t, env, tether, "devices", "show", id)
		if err != nil {
			return false
		}
		var d wire.Device
		return json.Unmarshal([]byte(out), &d) == nil && d.ConnectionState == wire.StateConnected
	})
}
