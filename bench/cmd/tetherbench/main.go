// Command tetherbench is Tether's benchmark harness (issue 4). It builds
// tetherd and tether, starts a hub, an agent and a forwarder as real
// processes on loopback with TLS on, and measures them beside two
// baselines in the same run:
//
//   - direct: the same load generator pointed straight at the target;
//   - limit: three io.Copy relays in a chain (bench/cmd/benchrelay) with
//     TLS on the two middle legs, where Tether has it: the physical limit
//     of the topology on this machine.
//
// It prints every figure beside both baselines and its target, then
// re-runs the loads against builds that serve pprof to find where the CPU
// goes, and writes docs/benchmarks.md and docs/benchmarks.png.
//
//	go run ./bench/cmd/tetherbench            # full run, ~6 minutes on 2 cores
//	go run ./bench/cmd/tetherbench -quick     # seconds per figure, for development
//
// Everything listens on 127.0.0.0/8 only (the wanbulk load: on its WAN
// link, between this host and a network namespace); every load is
// bounded in time and count.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tether-io/tether/bench"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

type config struct {
	src, out, docs  string
	srcLabel        string
	rounds          int
	quick           bool
	writeDocs       bool
	profile         bool
	devices         []int
	wsDevices       int
	warm, bulk      time.Duration
	rtt             time.Duration
	rttN            int
	setup           time.Duration
	setupN          int
	manyN, manySize int
	many            time.Duration
	profDur         time.Duration
	// The authflood load: streams, failing logins a second, and the
	// length of the windows before and after the attack and of the attack.
	floodStreams            int
	floodRate               float64
	floodQuiet, floodAttack time.Duration
	// floodPin keeps the attackers off the cores of the system under test
	// (see measureAuthFlood).
	floodPin bool
	// The loads of many streams on one connection: the WAN link's delay
	// each way, the connections timed across it and the pause before
	// each; the streams held open and how long they ping-pong; the
	// stalled streams and the longest their filling may take.
	wanHold, wanPause time.Duration
	wanN              int
	wanTLS            bool
	bigN              int
	bigDur            time.Duration
	stalledN          int
	stalledMax        time.Duration
	stalledNetns      bool
	// tcpPressure, when set, stands for tcp_mem's pressure threshold (in
	// bytes), which a network namespace of its own does not show.
	tcpPressure int64
	// The wanbulk load: the packet-level link's rate in bits per second
	// (its delay each way is wanHold), and the bulk's warm-up and count.
	wanRate               float64
	wanBulkWarm, wanBulkN time.Duration
	only                  map[string]bool
}

// loads are the names -only takes, in the order they run.
var loads = []string{"bulk", "rtt", "setup", "streams", "authflood", "devices", "wan", "streams10k", "stalled", "wanbulk"}

// runs reports whether the load named (one of loads) is part of this run.
func (c *config) runs(load string) bool { return len(c.only) == 0 || c.only[load] }

func parseConfig() *config {
	c := &config{}
	var devices string
	flag.StringVar(&c.src, "src", "", "module root to build tetherd and tether from (default: this module)")
	flag.StringVar(&c.srcLabel, "src-label", "", "what -src holds, for the report (default: its git commit, when it is a work tree)")
	flag.StringVar(&c.out, "out", "", "folder for binaries, logs, profiles and results (default bench/out)")
	flag.StringVar(&c.docs, "docs", "", "Markdown report to write (default docs/benchmarks.md; the PNG goes beside it)")
	flag.BoolVar(&c.quick, "quick", false, "short loads and few devices, for development")
	flag.BoolVar(&c.writeDocs, "write-docs", true, "write the report into -docs")
	flag.BoolVar(&c.profile, "profile", true, "re-run the loads with pprof builds and summarise where the CPU goes")
	flag.StringVar(&devices, "devices", "1000,10000", "simulated idle devices (MQTT over TLS) to measure hub memory at")
	flag.IntVar(&c.wsDevices, "ws-devices", 1000, "simulated idle devices over MQTT/WebSocket (the agent's default transport); 0 skips")
	flag.IntVar(&c.manyN, "streams", 1000, "concurrent streams of the ping-pong load")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds of the bulk, RTT and setup loads, the paths interleaved in each (medians and merged samples are reported)")
	flag.IntVar(&c.floodStreams, "authflood-streams", 100, "streams of the authflood load")
	flag.Float64Var(&c.floodRate, "authflood-rate", 1000, "failing logins a second of the authflood load")
	flag.BoolVar(&c.floodPin, "authflood-pin", true, "in the authflood load, run hub, agent, forwarder and the streams' load generator on CPU 0 and the attackers on the other CPUs (with 2 or more)")
	flag.DurationVar(&c.wanHold, "wan-delay", 25*time.Millisecond, "wan: the link's delay each way between the agent and the hub")
	flag.IntVar(&c.wanN, "wan-conns", 30, "wan: connections timed to their first byte, after the first")
	flag.BoolVar(&c.wanTLS, "wan-mqtt-tls", false, "wan: the agent's control channel is MQTT over TLS (through the MQTT port's link), not its default MQTT over WebSocket")
	flag.IntVar(&c.bigN, "streams10k", 10000, "streams10k: streams held open at once")
	flag.IntVar(&c.stalledN, "stalled-streams", 1000, "stalled: streams whose target never reads")
	flag.BoolVar(&c.stalledNetns, "stalled-netns", true, "stalled: run in a network namespace of its own whose socket buffers are capped (needs CAP_SYS_ADMIN); false: in the machine's, the fill stopped at the kernel's TCP memory pressure")
	flag.Float64Var(&c.wanRate, "wanbulk-rate", 100e6, "wanbulk: the packet-level WAN link's rate in bit/s (its delay each way is -wan-delay)")
	only := flag.String("only", "", "comma-separated loads to run, of "+strings.Join(loads, ",")+" (default all); the report's rows of the loads run replace theirs in -docs")
	flag.Parse()
	c.only = map[string]bool{}
	for f := range strings.SplitSeq(*only, ",") {
		if f = strings.TrimSpace(f); f != "" {
			if !slices.Contains(loads, f) {
				fmt.Fprintf(os.Stderr, "tetherbench: -only: no load %q; the loads are %s\n", f, strings.Join(loads, ","))
				os.Exit(2)
			}
			c.only[f] = true
		}
	}
	for f := range strings.SplitSeq(devices, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			c.devices = append(c.devices, n)
		}
	}
	c.manySize = 1 << 10
	c.warm, c.bulk = time.Second, 5*time.Second
	c.rtt, c.rttN = 3*time.Second, 50000
	c.setup, c.setupN = 3*time.Second, 15000
	c.many = 10 * time.Second
	c.profDur = 5 * time.Second
	c.floodQuiet, c.floodAttack = 5*time.Second, 10*time.Second
	c.wanPause = 300 * time.Millisecond
	c.bigDur = 5 * time.Second
	c.stalledMax = 30 * time.Second
	c.wanBulkWarm, c.wanBulkN = 3*time.Second, 5*time.Second
	if c.quick {
		c.wanBulkWarm, c.wanBulkN = 2*time.Second, 3*time.Second
		c.wanN = min(c.wanN, 5)
		c.bigN = min(c.bigN, 500)
		c.bigDur = 1500 * time.Millisecond
		c.stalledN = min(c.stalledN, 100)
		c.stalledMax = 10 * time.Second
		c.floodQuiet, c.floodAttack = 2*time.Second, 4*time.Second
		c.warm, c.bulk = 500*time.Millisecond, 1500*time.Millisecond
		c.rtt, c.rttN = time.Second, 5000
		c.setup, c.setupN = 1500*time.Millisecond, 500
		c.many = 2 * time.Second
		c.manyN = min(c.manyN, 100)
		c.profDur = 2 * time.Second
		c.rounds = 1
		if devices == "1000,10000" {
			c.devices = []int{200}
		}
		c.wsDevices = min(c.wsDevices, 100)
	}
	return c
}

func main() {
	if spec := os.Getenv(netnsEnv); spec != "" {
		os.Exit(runNetnsChild(spec))
	}
	c := parseConfig()
	ctx, stop := signalContext()
	defer stop()
	r := &runner{cfg: c, started: time.Now()}
	err := r.run(ctx)
	r.stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tetherbench:", err)
		os.Exit(1)
	}
}

// signalContext is done on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// runner holds one run's processes and results.
type runner struct {
	cfg     *config
	started time.Time
	mod     string // module root the harness runs in
	out     string
	bins    map[string]string
	procs   []*bench.Proc
	target  *bench.Target
	res     results
	// cpuProcs are the relay processes of each path, whose CPU time is
	// read around each load.
	cpuProcs  map[string][]*bench.Proc
	cpuTotals map[string]map[string]time.Duration
	cpuOps    map[string]float64
}

func (r *runner) logf(format string, args ...any) {
	fmt.Printf("[%6.1fs] %s\n", time.Since(r.started).Seconds(), fmt.Sprintf(format, args...))
}

func (r *runner) start(name string, env []string, bin string, args ...string) (*bench.Proc, error) {
	p, err := bench.Start(name, filepath.Join(r.out, "logs", name+".log"), env, bin, args...)
	if err != nil {
		return nil, err
	}
	r.procs = append(r.procs, p)
	return p, nil
}

// stopAll ends every process this run started, newest first, each by its
// own pid.
func (r *runner) stopAll() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		r.procs[i].Stop(10 * time.Second)
	}
	r.procs = nil
	if r.target != nil {
		r.target.Close()
		r.target = nil
	}
}

func (r *runner) stop(ps ...*bench.Proc) {
	for _, p := range ps {
		p.Stop(10 * time.Second)
	}
}

// raiseNofile lifts the soft limit on open files to the hard one: 1,000
// streams hold 2,000 descriptors here and 10,000 devices 10,000.
func raiseNofile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return l.Cur, err
		}
	}
	return l.Cur, nil
}

func goModRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("run tetherbench inside the tether module")
	}
	return filepath.Dir(gomod), nil
}

func (r *runner) run(ctx context.Context) error {
	c := r.cfg
	var err error
	if r.mod, err = goModRoot(); err != nil {
		return err
	}
	if c.src == "" {
		c.src = r.mod
	}
	if c.out == "" {
		c.out = filepath.Join(r.mod, "bench", "out")
	}
	if c.docs == "" {
		c.docs = filepath.Join(r.mod, "docs", "benchmarks.md")
	}
	r.out = c.out
	os.RemoveAll(filepath.Join(r.out, "logs"))
	os.RemoveAll(filepath.Join(r.out, "profiles"))
	os.RemoveAll(filepath.Join(r.out, "data"))
	for _, d := range []string{"bin", "logs", "profiles", "data"} {
		if err := os.MkdirAll(filepath.Join(r.out, d), 0o755); err != nil {
			return err
		}
	}
	nofile, err := raiseNofile()
	if err != nil {
		return fmt.Errorf("raising the open files limit: %w", err)
	}
	r.res.Machine = machine()
	r.res.Machine.Nofile = nofile
	r.res.Command = commandLine(os.Args[1:])
	r.res.Quick = c.quick
	c.rounds = max(c.rounds, 1)
	r.res.Rounds = c.rounds
	r.logf("machine: %d cores, %s, kernel %s, %s; open files limit %d",
		r.res.Machine.CPUs, r.res.Machine.CPU, r.res.Machine.Kernel, r.res.Machine.Go, nofile)
	if need := max(c.manyN*2, maxOf(c.devices), 2*c.bigN) + 200; need > int(nofile) {
		r.logf("warning: the open files limit %d may be too low", nofile)
	}

	r.res.Source = c.srcLabel
	if r.res.Source == "" {
		r.res.Source = gitLabel(c.src)
	}
	if err := r.build(ctx); err != nil {
		return err
	}
	if r.target, err = bench.StartTarget("127.0.0.1:0"); err != nil {
		return err
	}
	streamLoads := c.runs("bulk") || c.runs("rtt") || c.runs("setup") || c.runs("streams")
	if streamLoads {
		if err := r.measureStreams(ctx); err != nil {
			return err
		}
	}
	if c.runs("authflood") {
		if err := r.measureAuthFlood(ctx); err != nil {
			return err
		}
	}
	if c.runs("devices") {
		if err := r.measureDevices(ctx); err != nil {
			return err
		}
	}
	if c.runs("wan") {
		if err := r.measureWAN(ctx); err != nil {
			return err
		}
	}
	if c.runs("streams10k") {
		if err := r.measureBig(ctx); err != nil {
			return err
		}
	}
	if c.runs("stalled") {
		started, err := false, errors.New("-stalled-netns=false")
		if c.stalledNetns {
			started, err = r.stalledInNetns(ctx)
		}
		if !started {
			r.logf("stalled: no network namespace of its own (%v): measured in the machine's, stopped at the kernel's TCP memory pressure if it comes to that", err)
			err = r.measureStalled(ctx)
		}
		if err != nil {
			return err
		}
	}
	if c.runs("wanbulk") {
		if err := r.measureWANBulk(ctx); err != nil {
			return err
		}
	}
	if c.profile && (streamLoads || c.runs("devices")) {
		if err := r.profileLoads(ctx, streamLoads); err != nil {
			r.logf("profiling failed: %v", err)
			r.res.ProfileError = err.Error()
		}
	}
	r.res.Elapsed = time.Since(r.started).Round(time.Second).String()
	rows := r.rows()
	printTable(os.Stdout, rows)
	if err := r.writeResults(rows); err != nil {
		return err
	}
	r.logf("done in %s; logs, profiles and results.json in %s", r.res.Elapsed, r.out)
	return ctx.Err()
}

// commandLine is the command that ran this harness, its arguments quoted
// where a shell would need it.
func commandLine(args []string) string {
	parts := []string{"go run ./bench/cmd/tetherbench"}
	for _, a := range args {
		if strings.ContainsAny(a, " \t'\"$;&|<>()*?") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// build compiles the programs under test, the stripped agent whose size
// is a figure, the relay of the limit chain and, for profiling, copies of
// tetherd and tether with the pprof hook.
func (r *runner) build(ctx context.Context) error {
	bin := filepath.Join(r.out, "bin")
	r.bins = map[string]string{}
	type job struct {
		name, dir, pkg string
		extra          []string
	}
	// The agent is built as docs/guide.md builds it for devices, without
	// cgo: a static binary, with no libc mapped (1.3 MiB of RSS).
	static := func(extra ...string) []string { return append([]string{"CGO_ENABLED=0"}, extra...) }
	jobs := []job{
		{"tetherd", r.cfg.src, "./cmd/tetherd", nil},
		{"tether", r.cfg.src, "./cmd/tether", static()},
		{"tether-stripped", r.cfg.src, "./cmd/tether", static("-ldflags=-s -w")},
		{"tetherd-stripped", r.cfg.src, "./cmd/tetherd", []string{"-ldflags=-s -w"}},
		{"benchrelay", r.mod, "./bench/cmd/benchrelay", nil},
		{"benchflood", r.mod, "./bench/cmd/benchflood", nil},
		{"benchtarget", r.mod, "./bench/cmd/benchtarget", nil},
	}
	// The stalled load reads the hub's heap through the pprof builds.
	if r.cfg.profile || r.cfg.runs("stalled") {
		// The hook goes outside the module, or ./... would find a package
		// in the output folder.
		tmp, err := os.MkdirTemp("", "tetherbench-overlay-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		overlay, err := bench.WriteOverlay(tmp, r.cfg.src)
		if err != nil {
			return err
		}
		jobs = append(jobs,
			job{"tetherd-pprof", r.cfg.src, "./cmd/tetherd", []string{"-overlay=" + overlay}},
			job{"tether-pprof", r.cfg.src, "./cmd/tether", static("-overlay=" + overlay)})
	}
	r.logf("building %d binaries from %s", len(jobs), r.cfg.src)
	for _, j := range jobs {
		p, err := bench.Build(ctx, j.dir, filepath.Join(bin, j.name), j.pkg, j.extra...)
		if err != nil {
			return err
		}
		r.bins[j.name] = p
	}
	for _, n := range []string{"tether-stripped", "tetherd-stripped"} {
		st, err := os.Stat(r.bins[n])
		if err != nil {
			return err
		}
		if n == "tether-stripped" {
			r.res.AgentBinary = st.Size()
		} else {
			r.res.HubBinary = st.Size()
		}
	}
	return nil
}

// tunnel is a started hub + agent + forwarder.
type tunnel struct {
	hub         *hub
	agent, fwd  *bench.Proc
	fwdAddr     string
	agentPprof  string
	fwdPprof    string
	device      string
	sdk         bench.DialFunc
	forwardDial bench.DialFunc
	// links are the delaying links between the agent and the hub, on a
	// tunnel whose device leg crosses a WAN: HTTPS, then MQTT.
	links []*bench.Delay
}

// tunnelConfig says which tunnel to start.
type tunnelConfig struct {
	suffix, dir string
	// pprof: builds that serve pprof; fresh: register the device (else it
	// is on dir's hub already); defaults: the hub's limits as shipped.
	pprof, fresh, defaults bool
	// target is the agent's echo stream's target; r.target's when "".
	target string
	// wan, when positive, puts the agent behind delaying links holding
	// each chunk that long each way: both hub ports, with the hub's
	// streaming URLs naming the link's HTTPS port. The forwarder and the
	// service SDK reach the hub directly.
	wan time.Duration
	// mqttTLS: the agent's control channel is MQTT over TLS (--transport
	// tls) instead of its default, MQTT over WebSocket on the HTTPS port.
	mqttTLS bool
	// link, when set, puts the agent in the peer namespace of a
	// packet-level WAN link: it reaches the hub's HTTPS port (its control
	// channel, MQTT over WebSocket, and its streams) across the link at
	// its host address, where the hub listens; the forwarder and the
	// service SDK reach that address in this namespace, without the link.
	link *bench.WANLink
	// noSessions: the agent and the forwarder run with TETHER_SESSIONS=0,
	// a connection per stream.
	noSessions bool
}

// startTunnel starts (or restarts, on dir) a hub, registers the device if
// new, and starts the agent and the forwarder.
// With defaults the hub keeps its default limits (the authflood load).
func (r *runner) startTunnel(ctx context.Context, suffix, dir string, pprof, fresh, defaults bool) (*tunnel, error) {
	return r.startTunnelWith(ctx, tunnelConfig{suffix: suffix, dir: dir, pprof: pprof, fresh: fresh, defaults: defaults})
}

func (r *runner) startTunnelWith(ctx context.Context, cfg tunnelConfig) (*tunnel, error) {
	suffix := cfg.suffix
	tetherd, tether := r.bins["tetherd"], r.bins["tether"]
	if cfg.pprof {
		tetherd, tether = r.bins["tetherd-pprof"], r.bins["tether-pprof"]
	}
	target := cfg.target
	if target == "" {
		target = r.target.Addr()
	}
	t := &tunnel{device: "bench-dev"}
	var err error
	var hubArgs []string
	var linkHTTPS, linkMQTT, publicHost string
	if cfg.link != nil {
		publicHost = cfg.link.HostAddr.String()
	}
	if cfg.wan > 0 {
		if linkHTTPS, err = freePort(); err != nil {
			return nil, err
		}
		if linkMQTT, err = freePort(); err != nil {
			return nil, err
		}
		// The streaming URL the hub sends the device names the link, or
		// the device's stream legs would bypass it.
		hubArgs = []string{"--public-url", "https://" + linkHTTPS}
	}
	if t.hub, err = r.startHubOn(ctx, "tetherd"+suffix, tetherd, cfg.dir, publicHost, cfg.pprof, cfg.defaults, hubArgs...); err != nil {
		return nil, err
	}
	var d *wire.Device
	if cfg.fresh {
		if d, err = t.hub.svc.CreateDevice(ctx, t.device); err != nil {
			return nil, fmt.Errorf("registering the agent's device: %w", err)
		}
	} else if d, err = t.hub.svc.GetDevice(ctx, t.device); err != nil {
		return nil, err
	}
	devCS := t.hub.svc.DeviceConnectionString(d)
	var agentArgs []string
	if cfg.wan > 0 {
		for _, l := range []struct{ listen, to string }{{linkHTTPS, t.hub.httpAddr}, {linkMQTT, t.hub.mqttAddr}} {
			link, err := bench.StartDelay(l.listen, l.to, cfg.wan)
			if err != nil {
				t.closeLinks()
				return nil, fmt.Errorf("starting the delaying link: %w", err)
			}
			t.links = append(t.links, link)
		}
		cs, err := sas.ParseConnectionString(devCS)
		if err != nil {
			return nil, err
		}
		cs.HostName = linkHTTPS
		devCS = cs.String()
		if cfg.mqttTLS {
			agentArgs = []string{"--transport", "tls", "--mqtt-addr", linkMQTT}
		}
	} else if cfg.mqttTLS {
		agentArgs = []string{"--transport", "tls", "--mqtt-addr", t.hub.mqttAddr}
	}
	if cfg.link != nil {
		cs, err := sas.ParseConnectionString(devCS)
		if err != nil {
			return nil, err
		}
		cs.HostName = t.hub.httpAddr
		devCS = cs.String()
	}
	agentEnv, fwdEnv := t.hub.env(), t.hub.env()
	if cfg.pprof {
		if t.agentPprof, err = freePort(); err != nil {
			return nil, err
		}
		if t.fwdPprof, err = freePort(); err != nil {
			return nil, err
		}
		agentEnv = append(agentEnv, "TETHERBENCH_PPROF="+t.agentPprof)
		fwdEnv = append(fwdEnv, "TETHERBENCH_PPROF="+t.fwdPprof)
	}
	// The agent as users run it: its default transport (MQTT over
	// WebSocket on the HTTPS port) unless mqttTLS.
	if cfg.noSessions {
		agentEnv = append(agentEnv, "TETHER_SESSIONS=0")
		fwdEnv = append(fwdEnv, "TETHER_SESSIONS=0")
	}
	agentArgs = append([]string{"agent", "--device", devCS, "--allow", "echo=" + target}, agentArgs...)
	startAgent := func() error {
		t.agent, err = r.start("agent"+suffix, agentEnv, tether, agentArgs...)
		return err
	}
	if cfg.link != nil {
		err = cfg.link.InPeer(startAgent)
	} else {
		err = startAgent()
	}
	if err != nil {
		return nil, err
	}
	if _, err := t.agent.WaitLog(ctx, "agent running", 60*time.Second); err != nil {
		return nil, err
	}
	if t.fwdAddr, err = freePort(); err != nil {
		return nil, err
	}
	if t.fwd, err = r.start("forward"+suffix, fwdEnv, tether, "forward", t.device, "echo", "--listen", t.fwdAddr); err != nil {
		return nil, err
	}
	if _, err := t.fwd.WaitLog(ctx, "forwarding", 60*time.Second); err != nil {
		return nil, err
	}
	t.forwardDial = bench.TCPDialer(t.fwdAddr)
	svc := t.hub.svc
	t.sdk = func(ctx context.Context) (net.Conn, error) { return svc.OpenStream(ctx, t.device, "echo") }
	return t, nil
}

func (t *tunnel) closeLinks() {
	for _, l := range t.links {
		l.Close()
	}
	t.links = nil
}

func (r *runner) stopTunnel(t *tunnel) {
	r.stop(t.fwd, t.agent, t.hub.proc)
	t.closeLinks()
}

// startLimit starts the limit chain r1 → r2 → r3 → target with the hub's
// certificate and CA on the two middle legs, and returns r1's address and
// the middle relay (the hub's counterpart).
func (r *runner) startLimit(ctx context.Context, certDir string) (string, *bench.Proc, error) {
	cert, key, ca := filepath.Join(certDir, "server.pem"), filepath.Join(certDir, "server-key.pem"), filepath.Join(certDir, "ca.pem")
	next := r.target.Addr()
	var mid *bench.Proc
	for _, hop := range []struct {
		name string
		args []string
	}{
		{"limit-r3", []string{"--cert", cert, "--key", key}},
		{"limit-r2", []string{"--cert", cert, "--key", key, "--ca", ca}},
		{"limit-r1", []string{"--ca", ca}},
	} {
		p, err := r.start(hop.name, nil, r.bins["benchrelay"], append([]string{"--to", next}, hop.args...)...)
		if err != nil {
			return "", nil, err
		}
		line, err := p.WaitLog(ctx, "listening ", 30*time.Second)
		if err != nil {
			return "", nil, err
		}
		next = strings.TrimSpace(strings.TrimPrefix(line, "listening "))
		if hop.name == "limit-r2" {
			mid = p
		}
	}
	return next, mid, nil
}

func saveJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.LoadAvg[0] = loadAvg()
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.Go = strings.TrimSpace(strings.TrimPrefix(string(out), "go version "))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		m.Memory = strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " ")
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// gitLabel names the commit of a work tree, read-only, with "+ changes"
// when files differ from it: figures belong to a version.
func gitLabel(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (not a git work tree)"
	}
	label := "commit " + strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "--no-optional-locks", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		label += " + uncommitted changes"
	}
	return label
}
