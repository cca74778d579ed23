package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

// resilienceHub is tetherd run as a process on fixed loopback ports, so
// that it can be killed and started again in the same place.
type resilienceHub struct {
	tetherd, tether string
	dir             string
	httpAddr        string // kept across restarts: connection strings name it
	proc            *proc
	env             []string // TETHER_HUB and TETHER_CA for the CLI
}

func startResilienceHub(t *testing.T) *resilienceHub {
	t.Helper()
	tetherd, tether := buildBinaries(t)
	h := &resilienceHub{
		tetherd: tetherd, tether: tether,
		dir:      filepath.Join(t.TempDir(), "data"),
		httpAddr: freePort(t),
	}
	h.start(t)
	owner, err := os.ReadFile(filepath.Join(h.dir, "owner.connstr"))
	if err != nil {
		t.Fatal(err)
	}
	h.env = []string{"TETHER_HUB=" + strings.TrimSpace(string(owner)), "TETHER_CA=" + filepath.Join(h.dir, "ca.pem")}
	return h
}

// start runs tetherd on h's folder and ports and waits until it is healthy.
func (h *resilienceHub) start(t *testing.T) {
	t.Helper()
	h.proc = startProc(t, nil, h.tetherd, "--data", h.dir, "--listen", h.httpAddr, "--mqtt-listen", "127.0.0.1:0", "--hostname", "127.0.0.1")
	waitHealthy(t, h.dir, h.httpAddr, h.proc)
}

func (h *resilienceHub) addDevice(t *testing.T, id string) string {
	t.Helper()
	out, stderr, err := runCmd(t, h.env, h.tether, "devices", "add", id)
	if err != nil {
		t.Fatalf("devices add %s: %v: %s", id, err, stderr)
	}
	return strings.TrimSpace(out)
}

// show returns the hub's record of a device.
func (h *resilienceHub) show(t *testing.T, id string) (wire.Device, error) {
	t.Helper()
	out, stderr, err := runCmd(t, h.env, h.tether, "devices", "show", id)
	if err != nil {
		return wire.Device{}, fmt.Errorf("devices show: %v: %s", err, stderr)
	}
	var d wire.Device
	err = json.Unmarshal([]byte(out), &d)
	return d, err
}

// echoThrough sends msg through the forwarder at addr and checks that it
// comes back within d.
func echoThrough(addr, msg string, d time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c, back); err != nil {
		return err
	}
	if string(back) != msg {
		return fmt.Errorf("sent %q, got %q", msg, back)
	}
	return nil
}

// waitOutput waits until p's output after byte offset from holds s and
// returns when it saw it; polling, as the output has no other event.
func waitOutput(t *testing.T, p *proc, from int, s string, d time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if out := p.out.String(); len(out) > from && strings.Contains(out[from:], s) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output within %v", s, d)
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("process exited (%v) before printing %q", err, s)
		case <-tick.C:
		}
	}
}

// checkNoSecrets fails if a log holds the device's key or a SAS token.
func checkNoSecrets(t *testing.T, name, log, devStr string) {
	t.Helper()
	_, key, _ := strings.Cut(devStr, "SharedAccessKey=")
	for _, secret := range []string{key, "SharedAccessKey=", "SharedAccessSignature", "sig=", "Bearer"} {
		if secret != "" && strings.Contains(log, secret) {
			t.Errorf("the %s log holds %q", name, secret)
		}
	}
}

// TestHubKilledAndRestarted kills the hub with SIGKILL under a connected
// agent and a running forwarder, starts it again on the same data folder
// and ports, and times how soon a connection through the forwarder (never
// restarted, the device left alone) reaches the device again.
func TestHubKilledAndRestarted(t *testing.T) {
	// Not parallel: it bounds how long the agent takes to come back,
	// which other tests sharing the CPUs would stretch.
	h := startResilienceHub(t)
	devStr := h.addDevice(t, "dev1")
	echoAddr := startEcho(t)

	// The agent runs from a config file, as deploy/ sets it up.
	conf := filepath.Join(t.TempDir(), "agent.toml")
	confText := fmt.Sprintf("device = %q\nca = %q\nlog_level = \"debug\"\n\n[allow]\necho = %q\n", devStr, filepath.Join(h.dir, "ca.pem"), echoAddr)
	if err := os.WriteFile(conf, []byte(confText), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := startProc(t, []string{"TETHER_CA=", "TETHER_DEVICE="}, h.tether, "agent", "--config", conf)
	fwd := startProc(t, h.env, h.tether, "forward", "dev1", "echo", "--listen", "127.0.0.1:0", "--log-level", "debug")
	fwdAddr := fwd.forwarding(t, 30*time.Second)
	waitConnected(t, h.env, h.tether, "dev1")
	if err := echoThrough(fwdAddr, "before", 10*time.Second); err != nil {
		t.Fatalf("echo before the kill: %v", err)
	}

	mark := len(agent.out.String())
	if err := h.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-h.proc.done
	waitOutput(t, agent, mark, "connection to hub lost", 30*time.Second)

	h.start(t)
	healthy := time.Now()
	const budget = 10 * time.Second
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	tries := 0
	for {
		tries++
		err := echoThrough(fwdAddr, fmt.Sprintf("after %d", tries), 2*time.Second)
		if err == nil {
			break
		}
		if time.Since(healthy) > budget {
			t.Fatalf("no echo through the forwarder within %v of the restarted hub's /healthz (%d tries; last: %v)", budget, tries, err)
		}
		<-tick.C
	}
	took := time.Since(healthy)
	t.Logf("first echo through the forwarder %v after the restarted hub was healthy (%d tries)", took.Round(time.Millisecond), tries)

	// The agent reconnected by itself; the forwarder logged each
	// connection, and neither process logged a secret.
	if !strings.Contains(agent.out.String()[mark:], "reconnected to hub") {
		t.Error("the agent did not log its reconnect")
	}
	// The forwarder logs a connection once it has ended, after the echo.
	waitOutput(t, fwd, 0, "tether: connection from=127.0.0.1:", 10*time.Second)
	waitOutput(t, fwd, 0, " open=", 10*time.Second)
	checkNoSecrets(t, "agent", agent.out.String(), devStr)
	checkNoSecrets(t, "forward", fwd.out.String(), h.env[0])
	if t.Failed() {
		t.Logf("agent log:\n%s", agent.out)
	}
}

// blackHoleProxy forwards TCP connections to a target until told to
// black-hole them: from then on the connections it holds pass nothing,
// either way, and are not closed, as when a NAT or a load balancer loses
// its state without telling either end. New connections pass normally.
type blackHoleProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	pairs []*proxyPair
	wg    sync.WaitGroup
}

type proxyPair struct {
	client, upstream net.Conn
	dead             atomic.Bool
	// upstreamEnded is closed when the target ends its side.
	upstreamEnded chan struct{}
	endOnce       sync.Once
	endedAt       atomic.Int64 // unix nanoseconds
}

func startBlackHoleProxy(t *testing.T, target string) *blackHoleProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackHoleProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, pp := range p.pairs {
			pp.client.Close()
			pp.upstream.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *blackHoleProxy) addr() string { return p.ln.Addr().String() }

func (p *blackHoleProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pp := &proxyPair{client: c, upstream: up, upstreamEnded: make(chan struct{})}
		p.mu.Lock()
		p.pairs = append(p.pairs, pp)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pp, up, c, false)
		go p.pipe(pp, c, up, true)
	}
}

// pipe copies src to dst until src ends. While the pair is alive an end is
// passed on as a close; once it is black-holed nothing is, not even that.
func (p *blackHoleProxy) pipe(pp *proxyPair, dst, src net.Conn, fromUpstream bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !pp.dead.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if fromUpstream {
				pp.endOnce.Do(func() {
					pp.endedAt.Store(time.Now().UnixNano())
					close(pp.upstreamEnded)
				})
			}
			if !pp.dead.Load() {
				dst.Close()
				src.Close()
			}
			return
		}
	}
}

// blackHole silences every connection held now and returns them.
func (p *blackHoleProxy) blackHole() []*proxyPair {
	p.mu.Lock()
	defer p.mu.Unlock()
	held := p.pairs
	p.pairs = nil
	for _, pp := range held {
		pp.dead.Store(true)
	}
	return held
}

// TestAgentNoticesBlackHole runs the agent through a proxy to the hub and
// makes the proxy swallow everything on the agent's connection without
// closing it. The agent, with a 2 s keep-alive, must notice and reconnect
// through the proxy; the hub must drop its side of the dead link; and a
// stream through the forwarder must work again.
func TestAgentNoticesBlackHole(t *testing.T) {
	// Not parallel: it bounds how long the agent takes to notice,
	// which other tests sharing the CPUs would stretch.
	const keepAlive = 2 * time.Second
	h := startResilienceHub(t)
	devStr := h.addDevice(t, "dev1")
	proxy := startBlackHoleProxy(t, h.httpAddr)
	// The agent reaches the hub through the proxy: its HostName names the
	// proxy, and the hub's certificate for 127.0.0.1 still verifies.
	viaProxy := strings.Replace(devStr, "HostName="+h.httpAddr+";", "HostName="+proxy.addr()+";", 1)
	if viaProxy == devStr {
		t.Fatalf("connection string %q does not name the hub at %s", devStr, h.httpAddr)
	}
	echoAddr := startEcho(t)
	agent := startProc(t, h.env, h.tether, "agent", "--device", viaProxy, "--allow", "echo="+echoAddr,
		"--keepalive", keepAlive.String(), "--log-level", "debug")
	fwd := startProc(t, h.env, h.tether, "forward", "dev1", "echo", "--listen", "127.0.0.1:0")
	fwdAddr := fwd.forwarding(t, 30*time.Second)
	waitConnected(t, h.env, h.tether, "dev1")
	if err := echoThrough(fwdAddr, "before", 10*time.Second); err != nil {
		t.Fatalf("echo before the black hole: %v", err)
	}
	before, err := h.show(t, "dev1")
	if err != nil {
		t.Fatal(err)
	}

	mark := len(agent.out.String())
	held := proxy.blackHole()
	cut := time.Now()
	// The agent's control channel, and with sessions its data session,
	// which the first stream opened.
	want := 2
	if noSessions {
		want = 1
	}
	if len(held) != want {
		t.Fatalf("the proxy held %d connections, want the agent's control channel (and its data session with sessions on)", len(held))
	}

	// The agent: ping unanswered within keep-alive + ping timeout (both
	// 2 s, checked every 0.5 s), then a reconnect after at most 1 s of
	// backoff. 10 s leaves room for a slow machine, not for a missed ping.
	lost := waitOutput(t, agent, mark, "connection to hub lost", 10*time.Second)
	if !strings.Contains(agent.out.String()[mark:], "pingresp not received") {
		t.Errorf("the agent's loss was not its keep-alive:\n%s", agent.out.String()[mark:])
	}
	back := waitOutput(t, agent, mark, "reconnected to hub", 10*time.Second)
	t.Logf("agent: link lost %v and reconnected %v after the black hole",
		lost.Sub(cut).Round(time.Millisecond), back.Sub(cut).Round(time.Millisecond))
	if d := back.Sub(cut); d > 3*keepAlive+time.Second+2*time.Second {
		t.Errorf("the agent took %v to reconnect, want within keep-alive + ping timeout + backoff", d)
	}

	// The hub: it closes its side of the dead links (keep-alive expiry at
	// 1.5 × 2 s, or the new session taking over; a data session ends with
	// its device's control channel), and its registry shows the device
	// either Disconnected or connected on a new session.
	timeout := time.After(10 * time.Second)
	for i, pp := range held {
		select {
		case <-pp.upstreamEnded:
			t.Logf("hub: dropped dead link %d %v after the black hole", i,
				time.Unix(0, pp.endedAt.Load()).Sub(cut).Round(time.Millisecond))
		case <-timeout:
			t.Fatalf("the hub kept dead link %d of %d open for 10 s", i, len(held))
		}
	}
	eventually(t, 10*time.Second, "the hub to show dev1 disconnected or reconnected", func() bool {
		d, err := h.show(t, "dev1")
		if err != nil {
			return false
		}
		return d.ConnectionState == wire.StateDisconnect ||
			(d.ConnectionState == wire.StateConnected && d.ConnectionStateUpdatedTime.After(before.ConnectionStateUpdatedTime))
	})

	// And streams flow again.
	eventually(t, 10*time.Second, "an echo through the forwarder after the reconnect", func() bool {
		return echoThrough(fwdAddr, "after", 2*time.Second) == nil
	})
	checkNoSecrets(t, "agent", agent.out.String(), devStr)
	if t.Failed() {
		t.Logf("agent log:\n%s", agent.out)
	}
}
