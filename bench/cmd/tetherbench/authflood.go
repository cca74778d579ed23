package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tether-io/tether/bench"
	"github.com/tether-io/tether/wire"
)

// AuthFloodFig is the authflood load (issue 6): streams through the
// forwarder, unloaded and while attackers fail to log in.
type AuthFloodFig struct {
	Streams, Opened int
	// Ping-pong round trips a second of all streams: before the attack,
	// during it, after it; Unloaded joins before and after.
	Before, Attack, After, Unloaded float64
	Ratio                           float64 // Attack ÷ Unloaded
	P99Unloaded, P99Attack          float64 // ms
	Errors                          int
	LastErr                         string `json:",omitempty"`
	Flood                           bench.FloodResult
	Sources                         []string
	// HubRefusals are the hub's own counters over the attack:
	// tether_limited_total by limit, and failed device logins.
	HubRefusals map[string]float64
	// CPU is the CPU each process used, in cores (CPU-s per s), during
	// the unloaded and the attack windows; "machine" is all of it
	// (/proc/stat, out of the machine's cores).
	CPUUnloaded, CPUAttack map[string]float64
	// HubCPUPerLogin is the hub's extra CPU per attempt, in µs.
	HubCPUPerLogin float64
	// Control is the streams' rate while the same attack goes to a
	// listener that only accepts and closes (what the hub does to a source
	// in back-off): what the attacker itself costs the machine.
	// RatioControl is Control ÷ Unloaded, and HubShare Ratio ÷
	// RatioControl: the part of the loss that is the hub's doing.
	Control, RatioControl, HubShare float64
	CPUControl                      map[string]float64
	// Pinned is set when the system under test ran on CPU 0 and the
	// attackers on the other CPUs.
	Pinned bool
}

// attackSources are the attackers' addresses: other than the streams'
// client (127.0.0.1) and the simulated devices (127.0.0.2–17).
func attackSources() []string {
	var s []string
	for i := 1; i <= 8; i++ {
		s = append(s, fmt.Sprintf("127.0.1.%d", i))
	}
	return s
}

// floodProc starts benchflood against h for dur, writing its result to out.
func (r *runner) floodProc(name string, h *hub, device string, dur time.Duration, out string) (*bench.Proc, error) {
	return r.floodAt(name, h.mqttAddr, "wss://"+h.httpAddr+wire.PathMQTTWebSocket, device, dur, out)
}

// floodAt starts benchflood against an MQTT address and a WebSocket URL
// (empty: none).
func (r *runner) floodAt(name, mqttAddr, wsURL, device string, dur time.Duration, out string) (*bench.Proc, error) {
	c := r.cfg
	wsEvery := "10"
	if wsURL == "" {
		wsEvery = "0"
	}
	return r.start(name, nil, r.bins["benchflood"],
		"-host", "127.0.0.1", "-device", device, "-mqtt", mqttAddr,
		"-ws", wsURL, "-ws-every", wsEvery,
		"-sources", strings.Join(attackSources(), ","),
		"-rate", strconv.FormatFloat(c.floodRate, 'f', -1, 64), "-dur", dur.String(), "-inflight", "512", "-out", out)
}

// nullListener accepts connections on loopback and closes each at once, as
// the hub does to a source in login back-off, for the control attack.
func nullListener() (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }, nil
}

// waitExit waits (bounded) for a process to end by itself.
func waitExit(p *bench.Proc, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.Exited() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p.Exited()
}

// measureAuthFlood runs the authflood load: a hub with its default
// limits, an agent and a forwarder; c.floodStreams streams ping-pong 1 KiB
// through the forwarder without pause, for a window before the attack,
// one during it and one after it, on the same streams; during the attack
// benchflood fails c.floodRate logins a second from 8 other loopback
// addresses. The figure is the streams' rate during the attack ÷ their
// rate before and after it.
func (r *runner) measureAuthFlood(ctx context.Context) error {
	c := r.cfg
	t, err := r.startTunnel(ctx, "-authflood", filepath.Join(r.out, "data", "authflood"), false, true, true)
	if err != nil {
		return err
	}
	defer r.stopTunnel(t)
	if res := bench.Setup(ctx, t.forwardDial, 1, 30*time.Second, 1); res.OK != 1 {
		return fmt.Errorf("authflood: the tunnel does not echo: %v", res.LastErr)
	}
	r.logf("authflood: hub with default limits %s (MQTT %s); %d streams, attackers at %.0f logins/s from %s",
		t.hub.httpAddr, t.hub.mqttAddr, c.floodStreams, c.floodRate, strings.Join(attackSources(), ", "))
	// A real attacker's CPU is elsewhere. On one machine the attackers'
	// own work (their TLS handshakes, the kernel's side of their
	// connections) would otherwise be taken from the streams, whatever
	// the hub does: so the system under test (hub, agent, forwarder and
	// this process, the streams' load generator) runs on CPU 0, before,
	// during and after the attack alike, and the attackers on the others.
	pinned := c.floodPin && runtime.NumCPU() >= 2
	attackCPUs := bench.CPUs(runtime.NumCPU())[1:]
	pin := func(p *bench.Proc, cpus ...int) {
		if err := bench.Pin(p.PID(), cpus...); err != nil {
			r.logf("authflood: %v", err)
		}
	}
	if pinned {
		for _, p := range []*bench.Proc{t.hub.proc, t.agent, t.fwd} {
			pin(p, 0)
		}
		if err := bench.Pin(os.Getpid(), 0); err != nil {
			return fmt.Errorf("authflood: %w", err)
		}
		defer bench.Pin(os.Getpid(), bench.CPUs(runtime.NumCPU())...)
		r.logf("authflood: hub, agent, forwarder and the load generator on CPU 0; attackers on CPUs %v", attackCPUs)
	}

	const ramp = time.Second // attackers start; not counted
	nullAddr, stopNull, err := nullListener()
	if err != nil {
		return err
	}
	defer stopNull()
	phases := []bench.Phase{
		{Name: "warm", Dur: time.Second},
		{Name: "before", Dur: c.floodQuiet},
		// The control: the same attackers against a listener that only
		// closes, so what they cost the machine is measured apart from
		// what they cost the hub.
		{Name: "ramp-control", Dur: ramp},
		{Name: "control", Dur: c.floodAttack},
		{Name: "drain-control", Dur: 2 * time.Second},
		{Name: "mid", Dur: c.floodQuiet},
		{Name: "ramp", Dur: ramp},
		{Name: "attack", Dur: c.floodAttack},
		{Name: "drain", Dur: 2 * time.Second}, // attackers' last attempts end
		{Name: "after", Dur: c.floodQuiet},
	}
	procs := []*bench.Proc{t.hub.proc, t.agent, t.fwd}
	out := filepath.Join(r.out, "authflood.json")
	os.Remove(out)
	var (
		mu             sync.Mutex
		flood, floodC  *bench.Proc
		floodEr, cfErr error
		marks          = make([]cpuMark, len(phases)+1)
		metrics        [2]map[string]float64
	)
	at := func(i int) {
		mu.Lock()
		defer mu.Unlock()
		active := flood
		if strings.HasSuffix(phases[i].Name, "control") {
			active = floodC
		}
		if phases[i].Name == "ramp-control" {
			floodC, cfErr = r.floodAt("benchflood-control", nullAddr, "", t.device, ramp+c.floodAttack, filepath.Join(r.out, "authflood-control.json"))
			if cfErr == nil && pinned {
				pin(floodC, attackCPUs...)
			}
			active = floodC
		}
		marks[i] = takeCPU(procs, active)
		switch phases[i].Name {
		case "ramp":
			metrics[0], _ = scrapeLimits(t.hub.metricsAddr)
			flood, floodEr = r.floodProc("benchflood", t.hub, t.device, ramp+c.floodAttack, out)
			if floodEr == nil && pinned {
				pin(flood, attackCPUs...)
			}
		case "drain":
			// Read at the end of drain, as "after" begins.
		case "after":
			metrics[1], _ = scrapeLimits(t.hub.metricsAddr)
		}
	}
	res, opened, openTime, errs, lastErr := bench.PingPong(ctx, t.forwardDial, c.floodStreams, c.manySize, 32, phases, at)
	mu.Lock()
	marks[len(phases)] = takeCPU(procs, flood)
	mu.Unlock()
	if floodEr != nil {
		return fmt.Errorf("authflood: starting the attackers: %w", floodEr)
	}
	if cfErr != nil {
		return fmt.Errorf("authflood: starting the control attackers: %w", cfErr)
	}
	if floodC != nil && !waitExit(floodC, 30*time.Second) {
		r.stop(floodC)
	}
	if flood == nil {
		return fmt.Errorf("authflood: the attack never started")
	}
	if !waitExit(flood, 30*time.Second) {
		r.stop(flood)
		return fmt.Errorf("authflood: benchflood did not end; see %s", flood.Log)
	}
	fig := AuthFloodFig{Streams: c.floodStreams, Opened: opened, Errors: errs, LastErr: errString(lastErr), Sources: attackSources(), Pinned: pinned}
	b, err := os.ReadFile(out)
	if err != nil {
		return fmt.Errorf("authflood: no result from benchflood (see %s): %w", flood.Log, err)
	}
	if err := json.Unmarshal(b, &fig.Flood); err != nil {
		return err
	}
	idx := map[string]int{}
	for i, p := range phases {
		idx[p.Name] = i
	}
	bf, ak, af, md, ct := res[idx["before"]], res[idx["attack"]], res[idx["after"]], res[idx["mid"]], res[idx["control"]]
	fig.Before, fig.Attack, fig.After, fig.Control = bf.Rate(), ak.Rate(), af.Rate(), ct.Rate()
	un := bench.Hist{}
	un.Merge(bf.Hist)
	un.Merge(md.Hist)
	un.Merge(af.Hist)
	fig.Unloaded = float64(bf.Msgs+md.Msgs+af.Msgs) / (bf.Dur + md.Dur + af.Dur).Seconds()
	if fig.Unloaded > 0 {
		fig.Ratio = fig.Attack / fig.Unloaded
		fig.RatioControl = fig.Control / fig.Unloaded
	}
	if fig.RatioControl > 0 {
		fig.HubShare = fig.Ratio / fig.RatioControl
	}
	fig.CPUControl = cores(marks[idx["control"]], marks[idx["control"]+1])
	fig.P99Unloaded, fig.P99Attack = ms(un.Quantile(0.99)), ms(ak.Hist.Quantile(0.99))
	// CPU in cores over the windows: before + after, and attack.
	fig.CPUUnloaded = addCores(cores(marks[idx["before"]], marks[idx["before"]+1]), cores(marks[idx["after"]], marks[idx["after"]+1]))
	fig.CPUAttack = cores(marks[idx["attack"]], marks[idx["attack"]+1])
	if fig.Flood.Rate > 0 {
		fig.HubCPUPerLogin = (fig.CPUAttack["tetherd"] - fig.CPUUnloaded["tetherd"]) / fig.Flood.Rate * 1e6
	}
	if metrics[0] != nil && metrics[1] != nil {
		fig.HubRefusals = map[string]float64{}
		for k, v := range metrics[1] {
			if d := v - metrics[0][k]; d > 0 {
				fig.HubRefusals[k] = d
			}
		}
	}
	r.res.AuthFlood = &fig
	r.logf("authflood: %d streams opened in %.1fs; %.0f msg/s before, %.0f during the attack, %.0f after: %.2f× unloaded (p99 %.1f → %.1f ms)",
		opened, openTime.Seconds(), fig.Before, fig.Attack, fig.After, fig.Ratio, fig.P99Unloaded, fig.P99Attack)
	r.logf("authflood: attack %d attempts (%d skipped) in %.1fs = %.0f/s; %s; hub counted %v",
		fig.Flood.Attempts, fig.Flood.Skipped, fig.Flood.Seconds, fig.Flood.Rate, strings.Join(bench.SortedOutcomes(fig.Flood.Outcomes), ", "), fig.HubRefusals)
	r.logf("authflood: CPU cores unloaded %s; attack %s; hub +%.0f µs per attempt", fmtCores(fig.CPUUnloaded), fmtCores(fig.CPUAttack), fig.HubCPUPerLogin)
	r.logf("authflood: control (same attackers against a listener that only closes): %.0f msg/s, %.2f× unloaded; attack on the hub ÷ control %.2f; CPU cores %s",
		fig.Control, fig.RatioControl, fig.HubShare, fmtCores(fig.CPUControl))
	if c.profile {
		if err := r.profileAuthFlood(ctx); err != nil {
			r.logf("authflood profile: %v", err)
		}
	}
	return nil
}

// profileAuthFlood repeats the attack on a hub built with the pprof hook
// (default limits, fresh data) and takes CPU profiles of the hub, agent
// and forwarder during it.
func (r *runner) profileAuthFlood(ctx context.Context) error {
	c := r.cfg
	t, err := r.startTunnel(ctx, "-authflood-pprof", filepath.Join(r.out, "data", "authflood-pprof"), true, true, true)
	if err != nil {
		return err
	}
	defer r.stopTunnel(t)
	profDir := filepath.Join(r.out, "profiles")
	secs := int(c.profDur / time.Second)
	targets := []struct{ name, addr, bin string }{
		{"hub", t.hub.pprofAddr, r.bins["tetherd-pprof"]},
		{"agent", t.agentPprof, r.bins["tether-pprof"]},
		{"forward", t.fwdPprof, r.bins["tether-pprof"]},
	}
	var (
		wg    sync.WaitGroup
		flood *bench.Proc
		fErr  error
	)
	const load = "authflood-attack"
	phases := []bench.Phase{{Name: "warm", Dur: time.Second}, {Name: "ramp", Dur: time.Second}, {Name: "attack", Dur: c.profDur + time.Second}}
	bench.PingPong(ctx, t.forwardDial, c.floodStreams, c.manySize, 32, phases, func(i int) {
		switch phases[i].Name {
		case "ramp":
			flood, fErr = r.floodProc("benchflood-pprof", t.hub, t.device, c.profDur+2*time.Second, filepath.Join(r.out, "authflood-pprof.json"))
		case "attack":
			for _, tg := range targets {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := filepath.Join(profDir, load+"-"+tg.name+".pprof")
					if err := bench.FetchProfile(ctx, tg.addr, "profile", secs, p); err != nil {
						r.logf("profile %s %s: %v", load, tg.name, err)
						return
					}
					top, shares, err := bench.Summarize(ctx, tg.bin, p, 25)
					if err != nil {
						r.logf("%v", err)
						return
					}
					os.WriteFile(strings.TrimSuffix(p, ".pprof")+".txt", []byte(top+"\n"), 0o644)
					r.addProfile(ProfileSummary{Load: load, Proc: tg.name, Shares: shares, Samples: sampleLine(top), Top: top})
				}()
			}
		}
	})
	wg.Wait()
	if fErr != nil {
		return fErr
	}
	if flood != nil && !waitExit(flood, 30*time.Second) {
		r.stop(flood)
	}
	r.logf("profiled %s", load)
	return nil
}

// cpuMark is the CPU used so far by each process, and the machine's.
type cpuMark struct {
	at    time.Time
	procs map[string]time.Duration
	busy  float64 // machine: busy jiffies (all cores)
}

func takeCPU(procs []*bench.Proc, flood *bench.Proc) cpuMark {
	m := cpuMark{at: time.Now(), procs: map[string]time.Duration{}}
	for _, p := range procs {
		m.procs[strings.TrimSuffix(p.Name, "-authflood")] = p.CPU()
	}
	if flood != nil {
		m.procs["attackers"] = flood.CPU()
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		m.procs["load generator"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	m.busy = machineBusy()
	return m
}

// machineBusy reads the non-idle time of all cores, in seconds.
func machineBusy() float64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0
	}
	fs := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal …
	var busy float64
	for i, v := range fs[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest times are already in user
			break
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / 100 // USER_HZ
}

// cores is the CPU each process used between two marks, in cores.
func cores(a, b cpuMark) map[string]float64 {
	sec := b.at.Sub(a.at).Seconds()
	m := map[string]float64{}
	if sec <= 0 {
		return m
	}
	for k, v := range b.procs {
		v0, ok := a.procs[k]
		if !ok && k != "attackers" {
			continue
		}
		m[k] = (v - v0).Seconds() / sec
	}
	m["machine"] = (b.busy - a.busy) / sec
	return m
}

// addCores averages two windows of equal length.
func addCores(a, b map[string]float64) map[string]float64 {
	m := map[string]float64{}
	for k, v := range a {
		m[k] = (v + b[k]) / 2
	}
	return m
}

func fmtCores(m map[string]float64) string {
	var parts []string
	for _, k := range []string{"tetherd", "agent", "forward", "load generator", "attackers", "machine"} {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, v))
		}
	}
	return strings.Join(parts, ", ")
}

var metricLine = regexp.MustCompile(`^(tether_limited_total\{limit="([a-z_]+)"\}|tether_mqtt_auth_failures_total|tether_mqtt_connections_total) ([0-9.e+]+)$`)

// scrapeLimits reads the hub's refusal counters from /metrics.
func scrapeLimits(addr string) (map[string]float64, error) {
	if addr == "" {
		return nil, fmt.Errorf("no metrics listener")
	}
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		g := metricLine.FindStringSubmatch(sc.Text())
		if g == nil {
			continue
		}
		v, _ := strconv.ParseFloat(g[3], 64)
		name := g[1]
		if g[2] != "" {
			name = "refused: " + g[2]
		} else if name == "tether_mqtt_auth_failures_total" {
			name = "failed logins (CONNACK 5)"
		} else {
			name = "sessions accepted"
		}
		m[name] = v
	}
	return m, sc.Err()
}
