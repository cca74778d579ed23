package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// consoleScripts is the folder of the console's browser tests: a Node.js
// package whose only dependency, playwright-core, is pinned by its lock
// file (.ci/run runs npm ci there).
const consoleScripts = "testdata/console"

// browserTools finds node, Chromium and playwright-core. A missing one
// skips the test, or fails it under TETHER_E2E_REQUIRE=1 (CI).
func browserTools(t *testing.T) (node, chromium string) {
	t.Helper()
	if noSessions {
		// The console sees streams the same whichever way they are
		// carried; the run with sessions covers it, and CI time is
		// better spent elsewhere.
		t.Skip("the console's browser tests run once, in the run with sessions")
	}
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node (apt-get install nodejs npm)")
	}
	chromium = os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		missing = append(missing, chromium+" (apt-get install chromium)")
	}
	if _, err := os.Stat(filepath.Join(consoleScripts, "node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "playwright-core (npm ci in e2e/"+consoleScripts+")")
	}
	if len(missing) > 0 {
		msg := "the console's browser tests need " + strings.Join(missing, ", ") + "; .ci/run installs them"
		if os.Getenv("TETHER_E2E_REQUIRE") == "1" {
			t.Fatal(msg + "; TETHER_E2E_REQUIRE=1 forbids skipping")
		}
		t.Skip(msg)
	}
	return node, chromium
}

// TestConsoleInBrowser runs the console's browser tests
// (testdata/console/console.mjs) against tetherd, with real agents, a
// real tether forward and the stream logs they leave. The screenshots go
// to the test's artifact folder (go test -artifacts keeps them); with
// TETHER_CONSOLE_DOCS=1 they also replace docs/console/*.png.
func TestConsoleInBrowser(t *testing.T) {
	node, chromium := browserTools(t)
	t.Parallel()
	h := startProcHub(t)
	link, stderr, err := runCmd(t, h.env, h.tether, "console", "--no-open")
	if err != nil {
		t.Fatalf("tether console: %v: %s", err, stderr)
	}
	policy := func(name string) string {
		cs, stderr, err := runCmd(t, h.env, h.tether, "policies", "show", name)
		if err != nil {
			t.Fatalf("tether policies show %s: %v: %s", name, err, stderr)
		}
		return strings.TrimSpace(cs)
	}
	shots := t.ArtifactDir()
	f := newConsoleFleet(t, h)
	runBrowserScript(t, node, "console.mjs", f.do,
		"TETHER_CONSOLE_LINK="+strings.TrimSpace(link),
		"TETHER_READONLY="+policy("registryRead"),
		"TETHER_NOREAD="+policy("service"),
		"TETHER_SHOTS="+shots,
		"CHROMIUM="+chromium)
	if os.Getenv("TETHER_CONSOLE_DOCS") == "1" {
		copyShots(t, shots, filepath.Join("..", "docs", "console"))
	}
}

// runBrowserScript runs script of consoleScripts with node and env,
// answering each of its questions (lines "@tether {json}") with answer,
// and fails the test when the script fails. Its other lines are its
// report, logged.
func runBrowserScript(t *testing.T, node, script string, answer func(string) map[string]any, env ...string) {
	t.Helper()
	cmd := exec.Command(node, script)
	cmd.Dir = consoleScripts
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut lockedBuffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(4 * time.Minute)
	for done := false; !done; {
		select {
		case line, ok := <-lines:
			if !ok {
				done = true
				break
			}
			req, isReq := strings.CutPrefix(line, "@tether ")
			if !isReq {
				t.Log(line)
				continue
			}
			b, _ := json.Marshal(answer(req))
			if _, err := fmt.Fprintf(stdin, "%s\n", b); err != nil {
				t.Fatalf("answering %s: %v", script, err)
			}
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("%s did not end within 4 minutes\nstderr:\n%s", script, errOut.String())
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s failed (%v)\nstderr:\n%s", script, err, errOut.String())
	}
}

// consoleFleet does what the browser tests ask of the fleet.
type consoleFleet struct {
	t      *testing.T
	h      *procHub
	agents map[string]*proc
	svc    *service.Client // the owner's
	tls    *tls.Config     // trusts the hub's CA

	echo    string   // an echo server agents forward "echo" to
	fwdConn net.Conn // the connection through tether forward
	fwd     *proc

	htmlDevice *device.Client
	htmlConn   net.Conn
}

type consoleRequest struct {
	Do      string `json:"do"`
	ID      string `json:"id"`
	Connstr string `json:"connstr"`
}

// do carries out one request and returns the answer: fields for the
// script, or "error".
func (f *consoleFleet) do(raw string) map[string]any {
	var req consoleRequest
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		return map[string]any{"error": err.Error()}
	}
	out, err := f.run(req)
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	if out == nil {
		out = map[string]any{}
	}
	return out
}

func (f *consoleFleet) run(req consoleRequest) (map[string]any, error) {
	t, h := f.t, f.h
	switch req.Do {
	case "startAgent":
		f.agents[req.ID] = h.startAgent(t, req.ID, "echo="+f.echoAddr())
	case "startAgentWith":
		cs := strings.TrimSpace(req.Connstr)
		id := cs[strings.Index(cs, "DeviceId=")+len("DeviceId="):]
		id = id[:strings.IndexByte(id, ';')]
		f.agents[id] = startProc(t, h.env, h.tether, "agent", "--device", cs, "--allow", "echo="+f.echoAddr())
		waitConnected(t, h.env, h.tether, id)
	case "stopAgent":
		if err := f.agents[req.ID].stop(t); err != nil {
			return nil, fmt.Errorf("agent %s: %v", req.ID, err)
		}
	case "forward":
		f.agents[req.ID] = h.startAgent(t, req.ID, "echo="+f.echoAddr())
		f.fwd = startProc(t, h.env, h.tether, "forward", req.ID, "echo", "--listen", "127.0.0.1:0")
		c, err := net.Dial("tcp", f.fwd.forwarding(t, 30*time.Second))
		if err != nil {
			return nil, err
		}
		f.fwdConn = c
		const n = 3000
		if _, err := c.Write(make([]byte, n)); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
			return nil, err
		}
		return map[string]any{"bytes": n}, nil
	case "endForward":
		f.fwdConn.Close()
		return nil, f.fwd.stop(t)
	case "htmlStream":
		return f.htmlStream()
	case "endHtmlStream":
		f.htmlConn.Close()
		return nil, f.htmlDevice.Close()
	case "offlineRequest":
		// A stream request to a device that is not connected: its record
		// says offline.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := f.svc.OpenStream(ctx, req.ID, "echo"); err == nil {
			c.Close()
			return nil, fmt.Errorf("a stream to %s opened: it was meant to be offline", req.ID)
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("unknown request %q", req.Do)
	}
	return nil, nil
}

func (f *consoleFleet) echoAddr() string {
	if f.echo == "" {
		f.echo = serveTCP(f.t, func(c net.Conn) {
			defer c.Close()
			_, _ = io.Copy(c, c)
		})
	}
	return f.echo
}

// htmlStream connects a device whose id carries quotes and an event
// handler, and opens a stream to it whose name is an HTML element with
// script: the console must show both as the characters they are.
func (f *consoleFleet) htmlStream() (map[string]any, error) {
	const id, name = "a'onmouseover='alert(1)", "<img src=x onerror=window.xss=1>"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc := f.svc
	d, err := svc.CreateDevice(ctx, id)
	if err != nil {
		return nil, err
	}
	f.htmlDevice, err = device.Dial(ctx, svc.DeviceConnectionString(d), device.Options{TLSConfig: f.tls})
	if err != nil {
		return nil, err
	}
	serveEcho(f.t, f.htmlDevice)
	f.htmlConn, err = svc.OpenStream(ctx, id, name)
	if err != nil {
		return nil, err
	}
	if _, err := f.htmlConn.Write([]byte("hello")); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(f.htmlConn, make([]byte, 5)); err != nil {
		return nil, err
	}
	return map[string]any{"device": id, "name": name}, nil
}

// newConsoleFleet makes the fleet's service client, with the hub's owner
// policy and its CA.
func newConsoleFleet(t *testing.T, h *procHub) *consoleFleet {
	pem, err := os.ReadFile(filepath.Join(h.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	f := &consoleFleet{t: t, h: h, agents: map[string]*proc{}, tls: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	f.svc, err = service.New(strings.TrimPrefix(h.env[0], "TETHER_HUB="), service.Options{TLSConfig: f.tls})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.svc.Close() })
	return f
}

// copyShots puts the screenshots of this run in docs.
func copyShots(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConsoleTenThousandDevices: the Devices page of a hub of ten
// thousand devices (testdata/console/scale.mjs) shows its first page, and
// answers search, filter, sort and paging, within bounds, and a device
// that connects still shows within a second.
func TestConsoleTenThousandDevices(t *testing.T) {
	node, chromium := browserTools(t)
	t.Parallel()
	h := startHub(t, hubOptions{})
	const n = 10_000
	start := time.Now()
	keys := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				d, _, err := h.Registry.Put(context.Background(), wire.Device{DeviceID: fmt.Sprintf("dev-%05d", i)}, "")
				if err != nil {
					errs <- err
					return
				}
				keys[i] = d.Authentication.SymmetricKey.PrimaryKey
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	t.Logf("registered %d devices in %v", n, time.Since(start).Round(time.Millisecond))
	owner, err := sas.ParseConnectionString(h.Owner)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := owner.Token(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	link := (&url.URL{Scheme: "https", Host: owner.HostName, Path: "/console/", Fragment: "token=" + tok}).String()
	runBrowserScript(t, node, "scale.mjs", func(raw string) map[string]any {
		var req consoleRequest
		if err := json.Unmarshal([]byte(raw), &req); err != nil || req.Do != "connect" {
			return map[string]any{"error": fmt.Sprintf("unknown request %s", raw)}
		}
		i, err := strconv.Atoi(strings.TrimPrefix(req.ID, "dev-"))
		if err != nil || i < 0 || i >= n {
			return map[string]any{"error": "no device " + req.ID}
		}
		cs := sas.ConnectionString{HostName: owner.HostName, DeviceID: req.ID, SharedAccessKey: keys[i]}
		h.connectDevice(t, cs.String(), device.WebSocket)
		eventually(t, 10*time.Second, req.ID+" connected", func() bool {
			d, err := h.Registry.Get(context.Background(), req.ID)
			return err == nil && d.ConnectionState == wire.StateConnected
		})
		return map[string]any{}
	},
		"TETHER_CONSOLE_LINK="+link,
		"TETHER_DEVICES="+strconv.Itoa(n),
		"TETHER_SHOTS="+t.ArtifactDir(),
		"CHROMIUM="+chromium)
	if os.Getenv("TETHER_CONSOLE_DOCS") == "1" {
		copyShots(t, t.ArtifactDir(), filepath.Join("..", "docs", "console"))
	}
}
