package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tether-io/tether/bench"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// Path names: the two baselines, Tether through `tether forward`,
// Tether through the service SDK's OpenStream, and Tether through `tether
// forward` on a tunnel of its own whose agent and forwarder run without
// sessions (a connection per stream), to tell in the same run what
// sessions change.
const (
	direct = "direct"
	limit  = "limit"
	tether = "tether"
	sdk    = "sdk"
	plain  = "nosessions"
)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// measureStreams runs loads 1 to 4 on the three paths, and takes the
// agent's RSS idle and relaying.
func (r *runner) measureStreams(ctx context.Context) error {
	c := r.cfg
	dir := filepath.Join(r.out, "data", "hub")
	t, err := r.startTunnel(ctx, "", dir, false, true, false)
	if err != nil {
		return err
	}
	defer r.stopTunnel(t)
	limitAddr, _, err := r.startLimit(ctx, dir)
	if err != nil {
		return err
	}
	var relays []*bench.Proc
	for _, p := range r.procs {
		if strings.HasPrefix(p.Name, "limit-") {
			relays = append(relays, p)
		}
	}
	defer r.stop(relays...)
	r.logf("hub %s (MQTT %s), agent, forwarder %s, limit chain %s, target %s", t.hub.httpAddr, t.hub.mqttAddr, t.fwdAddr, limitAddr, r.target.Addr())

	// Idle: connected, no stream ever opened.
	r.res.AgentIdle = settledRSS(t.agent, 2*time.Second)
	r.res.HubIdle, _ = t.hub.proc.RSS()
	r.res.ForwardIdle, _ = t.fwd.RSS()
	r.logf("idle RSS: agent %.1f MiB, hub %.1f MiB, forwarder %.1f MiB", mib(r.res.AgentIdle), mib(r.res.HubIdle), mib(r.res.ForwardIdle))

	dials := map[string]bench.DialFunc{
		direct: bench.TCPDialer(r.target.Addr()),
		limit:  bench.TCPDialer(limitAddr),
		tether: t.forwardDial,
		sdk:    t.sdk,
	}
	for _, p := range []string{direct, limit, tether, sdk} {
		if res := bench.Setup(ctx, dials[p], 1, 30*time.Second, 1); res.OK != 1 {
			return fmt.Errorf("path %s does not echo: %v", p, res.LastErr)
		}
	}
	cpuProcs := map[string][]*bench.Proc{limit: relays, tether: {t.hub.proc, t.agent, t.fwd}, sdk: {t.hub.proc, t.agent}}
	if c.runs("rtt") || c.runs("setup") || c.runs("streams") {
		// Started after the idle figures above, so that they are of one
		// tunnel alone.
		tp, err := r.startTunnelWith(ctx, tunnelConfig{suffix: "-" + plain, dir: filepath.Join(r.out, "data", "hub-"+plain), fresh: true, noSessions: true})
		if err != nil {
			return fmt.Errorf("the tunnel without sessions: %w", err)
		}
		defer r.stopTunnel(tp)
		dials[plain] = tp.forwardDial
		if res := bench.Setup(ctx, dials[plain], 1, 30*time.Second, 1); res.OK != 1 {
			return fmt.Errorf("path %s does not echo: %v", plain, res.LastErr)
		}
		cpuProcs[plain] = []*bench.Proc{tp.hub.proc, tp.agent, tp.fwd}
	}
	r.cpuProcs = cpuProcs
	r.res.CPUPerOp = map[string]map[string]float64{}

	// 1. Bulk throughput, one stream each way.
	if c.runs("bulk") {
		if err := r.measureBulk(ctx, t, dials, cpuProcs); err != nil {
			return err
		}
	}
	if c.runs("rtt") {
		if err := r.measureRTT(ctx, dials); err != nil {
			return err
		}
	}
	if c.runs("setup") {
		r.measureSetup(ctx, dials)
	}
	if c.runs("streams") {
		r.measureMany(ctx, t, dials)
	}
	return nil
}

func (r *runner) measureBulk(ctx context.Context, t *tunnel, dials map[string]bench.DialFunc, cpuProcs map[string][]*bench.Proc) error {
	c := r.cfg
	paths := []string{direct, limit, tether}
	rounds := map[string][]float64{} // "forward tether" → Gbit/s per round
	cpuSec := map[string]map[string]float64{}
	gbs := map[string]float64{}
	agentRSS := sampleRSS(t.agent)
	// Rounds interleave the paths, so that a neighbour's load on this
	// shared machine weighs on all three alike; the median is reported.
	for round := range c.rounds {
		for _, dirName := range []string{"forward", "reverse"} {
			for _, p := range paths {
				key := dirName + " " + p
				var cpu0 map[string]time.Duration
				var t0 time.Time
				var window time.Duration
				if cpuSec[key] == nil {
					cpuSec[key] = map[string]float64{}
				}
				mark := func(end bool) {
					now := map[string]time.Duration{}
					for _, pr := range cpuProcs[p] {
						now[pr.Name] = pr.CPU()
					}
					if !end {
						cpu0, t0 = now, time.Now()
						return
					}
					window = time.Since(t0)
					for k, v := range now {
						cpuSec[key][k] += (v - cpu0[k]).Seconds()
					}
				}
				g, err := bench.Bulk(ctx, dials[p], r.target, dirName == "reverse", c.warm, c.bulk, mark)
				if err != nil {
					return fmt.Errorf("bulk %s %s: %w", dirName, p, err)
				}
				rounds[key] = append(rounds[key], g)
				gbs[key] += g * window.Seconds() / 8
				r.logf("round %d: bulk %-7s %-6s %6.2f Gbit/s", round+1, dirName, p, g)
				time.Sleep(500 * time.Millisecond)
			}
		}
	}
	r.res.AgentBulk = agentRSS.Max()
	r.res.Bulk = map[string]map[string]float64{}
	r.res.CPUPerGB = map[string]map[string]float64{}
	for key, vs := range rounds {
		dirName, p, _ := strings.Cut(key, " ")
		if r.res.Bulk[dirName] == nil {
			r.res.Bulk[dirName] = map[string]float64{}
		}
		r.res.Bulk[dirName][p] = median(vs)
		r.spread("bulk "+key+" (Gbit/s)", vs)
		if gbs[key] > 0 && len(cpuSec[key]) > 0 {
			m := map[string]float64{}
			for k, v := range cpuSec[key] {
				m[k] = v / gbs[key]
			}
			r.res.CPUPerGB[key] = m
			r.logf("bulk %-7s %-6s median %6.2f Gbit/s; CPU-s/GB %s", dirName, p, median(vs), fmtCPU(m))
		}
	}
	return nil
}

// median of a non-empty slice (sorted in place).
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	sort.Float64s(vs)
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2
	}
	return vs[len(vs)/2]
}

// spread records the per-round values of a figure for the report.
func (r *runner) spread(name string, vs []float64) {
	if r.res.Spread == nil {
		r.res.Spread = map[string][]float64{}
	}
	r.res.Spread[name] = append([]float64(nil), vs...)
}

// measureRTT times 64-byte round trips (load 2), in interleaved rounds
// whose samples are merged.
func (r *runner) measureRTT(ctx context.Context, dials map[string]bench.DialFunc) error {
	c := r.cfg
	paths := []string{direct, limit, tether, plain}
	hists := map[string]*bench.Hist{}
	p50s := map[string][]float64{}
	for round := range c.rounds {
		for _, p := range paths {
			cpu0 := r.cpuNow(p)
			h, err := bench.RTT(ctx, dials[p], 64, c.rtt, c.rttN)
			if err != nil {
				return fmt.Errorf("rtt %s: %w", p, err)
			}
			r.cpuAdd("rtt "+p, p, cpu0, float64(h.Count()+200), time.Microsecond)
			if hists[p] == nil {
				hists[p] = &bench.Hist{}
			}
			hists[p].Merge(h)
			p50s[p] = append(p50s[p], us(h.Quantile(0.5)))
			r.logf("round %d: rtt 64 B %-6s p50 %7.1f µs  p99 %7.1f µs  (%d)", round+1, p, us(h.Quantile(0.5)), us(h.Quantile(0.99)), h.Count())
		}
	}
	r.res.RTT = map[string]Lat{}
	for _, p := range paths {
		h := hists[p]
		r.res.RTT[p] = Lat{P50: us(h.Quantile(0.5)), P99: us(h.Quantile(0.99)), N: h.Count()}
		r.spread("rtt p50 "+p+" (µs)", p50s[p])
	}
	return nil
}

// measureSetup times stream setup to the first echoed byte, one at a time
// and 32 at once (load 3), in interleaved rounds whose samples are merged.
func (r *runner) measureSetup(ctx context.Context, dials map[string]bench.DialFunc) {
	c := r.cfg
	type acc struct {
		h       bench.Hist
		ok, bad int
		elapsed time.Duration
		last    error
		p50s    []float64
	}
	accs := map[string]*acc{}
	for round := range c.rounds {
		for _, p := range []string{direct, limit, tether, sdk, plain} {
			for _, conc := range []int{1, 32} {
				key := fmt.Sprintf("%s/%d", p, conc)
				cpu0 := r.cpuNow(p)
				res := bench.Setup(ctx, dials[p], conc, c.setup, c.setupN)
				r.cpuAdd("setup "+key, p, cpu0, float64(res.OK+res.Errors), time.Millisecond)
				a := accs[key]
				if a == nil {
					a = &acc{}
					accs[key] = a
				}
				a.h.Merge(res.Hist)
				a.ok += res.OK
				a.bad += res.Errors
				a.elapsed += res.Elapsed
				if res.LastErr != nil {
					a.last = res.LastErr
				}
				a.p50s = append(a.p50s, ms(res.Hist.Quantile(0.5)))
				r.logf("round %d: setup %-6s ×%-2d p50 %7.2f ms  p99 %7.2f ms  %7.0f /s  (%d ok, %d failed %s)", round+1, p, conc,
					ms(res.Hist.Quantile(0.5)), ms(res.Hist.Quantile(0.99)), res.Rate(), res.OK, res.Errors, errString(res.LastErr))
				// Let closed streams drain so the next run starts quiet.
				time.Sleep(500 * time.Millisecond)
			}
		}
	}
	r.res.Setup = map[string]SetupFig{}
	for key, a := range accs {
		r.res.Setup[key] = SetupFig{
			P50: ms(a.h.Quantile(0.5)), P99: ms(a.h.Quantile(0.99)), Rate: float64(a.ok) / a.elapsed.Seconds(),
			OK: a.ok, Errors: a.bad, LastErr: errString(a.last),
		}
		r.spread("setup p50 "+key+" (ms)", a.p50s)
	}
}

// measureMany opens many streams, then ping-pongs 1 KiB on all (load 4).
func (r *runner) measureMany(ctx context.Context, t *tunnel, dials map[string]bench.DialFunc) {
	c := r.cfg
	r.res.Many = map[string]ManyFig{}
	for _, p := range []string{direct, limit, tether, plain} {
		var s *rssSampler
		if p == tether {
			s = sampleRSS(t.agent)
		}
		var cpu0 map[string]time.Duration
		res := bench.Many(ctx, dials[p], c.manyN, c.manySize, 32, c.many, func() { cpu0 = r.cpuNow(p) })
		r.cpuAdd("streams "+p, p, cpu0, float64(res.Msgs), time.Microsecond)
		if s != nil {
			r.res.AgentMany = s.Max()
		}
		r.res.Many[p] = ManyFig{
			Rate: res.Rate(), P50: ms(res.Hist.Quantile(0.5)), P99: ms(res.Hist.Quantile(0.99)),
			Opened: res.Opened, OpenSec: res.OpenTime.Seconds(), Errors: res.Errors, LastErr: errString(res.LastErr),
		}
		r.logf("%d streams %-6s %8.0f msg/s  p50 %6.2f ms  p99 %6.2f ms  (opened %d in %.1fs, %d errors %s)", c.manyN, p,
			res.Rate(), ms(res.Hist.Quantile(0.5)), ms(res.Hist.Quantile(0.99)), res.Opened, res.OpenTime.Seconds(), res.Errors, errString(res.LastErr))
		if res.Opened < c.manyN {
			r.logf("warning: only %d of %d streams opened", res.Opened, c.manyN)
		}
		time.Sleep(2 * time.Second)
	}
}

// cpuNow reads the CPU time used so far by the processes of a path.
func (r *runner) cpuNow(path string) map[string]time.Duration {
	m := map[string]time.Duration{}
	for _, p := range r.cpuProcs[path] {
		m[p.Name] = p.CPU()
	}
	return m
}

// cpuAdd adds the CPU each process of path used since before, and the
// operations done meanwhile, to key's totals; CPUPerOp holds their ratio
// in unit: what a round trip or a set-up costs each hop, over all rounds.
func (r *runner) cpuAdd(key, path string, before map[string]time.Duration, ops float64, unit time.Duration) {
	if ops <= 0 || before == nil {
		return
	}
	if r.cpuTotals == nil {
		r.cpuTotals = map[string]map[string]time.Duration{}
		r.cpuOps = map[string]float64{}
	}
	if r.cpuTotals[key] == nil {
		r.cpuTotals[key] = map[string]time.Duration{}
	}
	r.cpuOps[key] += ops
	m := map[string]float64{}
	for name, v := range r.cpuNow(path) {
		r.cpuTotals[key][name] += v - before[name]
		m[name] = float64(r.cpuTotals[key][name]) / r.cpuOps[key] / float64(unit)
	}
	if len(m) > 0 {
		r.res.CPUPerOp[key] = m
	}
}

func fmtCPU(m map[string]float64) string {
	var parts []string
	for _, k := range []string{"tetherd", "agent", "forward", "limit-r1", "limit-r2", "limit-r3"} {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, v))
		}
	}
	return strings.Join(parts, ", ")
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// loopbackSources are the addresses simulated devices dial from.
func loopbackSources() []net.IP {
	var ips []net.IP
	for i := 2; i < 18; i++ {
		ips = append(ips, net.IPv4(127, 0, 0, byte(i)))
	}
	return ips
}

func (r *runner) deviceSim(h *hub) (*bench.DeviceSim, error) {
	cs, err := sas.ParseConnectionString(h.owner)
	if err != nil {
		return nil, err
	}
	return &bench.DeviceSim{
		Host:      "127.0.0.1",
		MQTTAddr:  h.mqttAddr,
		WSURL:     "wss://" + h.httpAddr + wire.PathMQTTWebSocket,
		TLS:       h.tlsConf,
		KeyName:   cs.SharedAccessKeyName,
		Key:       cs.SharedAccessKey,
		SourceIPs: loopbackSources(),
		KeepAlive: 20 * time.Minute,
	}, nil
}

// measureDevices connects idle simulated devices to a fresh hub and
// divides the hub's RSS growth by their number (load 5).
func (r *runner) measureDevices(ctx context.Context) error {
	type run struct {
		transport string
		ws        bool
		steps     []int
	}
	runs := []run{{"MQTT/TLS", false, r.cfg.devices}}
	if r.cfg.wsDevices > 0 {
		runs = append(runs, run{"MQTT/WebSocket", true, []int{r.cfg.wsDevices}})
	}
	for i, rn := range runs {
		if len(rn.steps) == 0 {
			continue
		}
		n := maxOf(rn.steps)
		h, err := r.startHub(ctx, fmt.Sprintf("tetherd-devices-%d", i), r.bins["tetherd"], filepath.Join(r.out, "data", fmt.Sprintf("devices-%d", i)), false, false)
		if err != nil {
			return err
		}
		ids := make([]string, n)
		for j := range ids {
			ids[j] = fmt.Sprintf("sim-%05d", j)
		}
		t0 := time.Now()
		if err := h.registerDevices(ctx, ids); err != nil {
			r.stop(h.proc)
			return err
		}
		r.logf("%s: registered %d devices in %.1fs", rn.transport, n, time.Since(t0).Seconds())
		h.svc.Close()
		sim, err := r.deviceSim(h)
		if err != nil {
			r.stop(h.proc)
			return err
		}
		rss0 := settledRSS(h.proc, 3*time.Second)
		var all []net.Conn
		done, failed := 0, 0
		for _, step := range rn.steps {
			t0 := time.Now()
			conns, bad, err := sim.ConnectAll(ctx, ids[done:step], rn.ws, 64)
			all = append(all, conns...)
			failed += bad
			took := time.Since(t0)
			done = step
			rss := settledRSS(h.proc, 5*time.Second)
			per := float64(rss-rss0) / float64(step-failed)
			r.res.DevMem = append(r.res.DevMem, DevMem{
				Transport: rn.transport, N: step, Failed: failed, RSS0: rss0, RSS: rss, PerDevice: per,
				ConnectSec: took.Seconds(), LastErr: errString(err),
			})
			r.logf("%s: %d devices connected (%d failed %s) in %.1fs: hub RSS %.1f → %.1f MiB, %.1f KiB per device",
				rn.transport, step, failed, errString(err), took.Seconds(), mib(rss0), mib(rss), per/1024)
		}
		bench.CloseAll(all)
		r.stop(h.proc)
	}
	return nil
}

// profileLoads restarts the tunnel with pprof builds and takes CPU
// profiles of the hub, the agent and the forwarder under each load, and
// heap profiles of the hub holding idle devices. cpu false skips the CPU
// profiles, so that -only devices profiles the devices alone.
func (r *runner) profileLoads(ctx context.Context, cpu bool) error {
	c := r.cfg
	dir := filepath.Join(r.out, "data", "hub")
	// The stream loads leave a hub with the agent's device in dir; with
	// -only devices there is none yet.
	_, statErr := os.Stat(dir)
	t, err := r.startTunnel(ctx, "-pprof", dir, true, errors.Is(statErr, fs.ErrNotExist), false)
	if err != nil {
		return err
	}
	defer r.stopTunnel(t)
	profDir := filepath.Join(r.out, "profiles")

	// The idle agent: what its RSS is made of.
	time.Sleep(2 * time.Second)
	if ms, err := memStats(ctx, t.agentPprof); err == nil {
		rss, anon, _ := t.agent.Smaps()
		r.res.AgentIdleDetail = map[string]int64{
			"RSS": rss, "anonymous": anon, "file-backed (code, data)": rss - anon,
			"HeapInuse": ms["HeapInuse"], "StackInuse": ms["StackInuse"], "Sys": ms["Sys"],
			"HeapIdle-HeapReleased": ms["HeapIdle"] - ms["HeapReleased"], "GCSys": ms["GCSys"], "OtherSys": ms["OtherSys"],
		}
		bench.FetchProfile(ctx, t.agentPprof, "heap?gc=1", 0, filepath.Join(profDir, "agent-idle.heap"))
		r.logf("idle agent (pprof build): RSS %.1f MiB = %.1f anonymous + %.1f file-backed; heap in use %.1f MiB, stacks %.1f MiB, runtime Sys %.1f MiB",
			mib(rss), mib(anon), mib(rss-anon), mib(ms["HeapInuse"]), mib(ms["StackInuse"]), mib(ms["Sys"]))
	}
	targets := []struct{ name, addr, bin string }{
		{"hub", t.hub.pprofAddr, r.bins["tetherd-pprof"]},
		{"agent", t.agentPprof, r.bins["tether-pprof"]},
		{"forward", t.fwdPprof, r.bins["tether-pprof"]},
	}
	secs := int(c.profDur / time.Second)
	// profile fetches CPU profiles of all three for secs seconds, starting
	// now, and returns a wait function.
	profile := func(load string) func() {
		var wg sync.WaitGroup
		for _, tg := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out := filepath.Join(profDir, load+"-"+tg.name+".pprof")
				if err := bench.FetchProfile(ctx, tg.addr, "profile", secs, out); err != nil {
					r.logf("profile %s %s: %v", load, tg.name, err)
					return
				}
				top, shares, err := bench.Summarize(ctx, tg.bin, out, 25)
				if err != nil {
					r.logf("%v", err)
					return
				}
				os.WriteFile(strings.TrimSuffix(out, ".pprof")+".txt", []byte(top+"\n"), 0o644)
				r.addProfile(ProfileSummary{Load: load, Proc: tg.name, Shares: shares, Samples: sampleLine(top), Top: top})
			}()
		}
		return wg.Wait
	}
	run := c.profDur + 1500*time.Millisecond
	loads := []struct {
		name string
		run  func(start func())
	}{
		{"bulk-forward", func(start func()) {
			start()
			bench.Bulk(ctx, t.forwardDial, r.target, false, 0, run, nil)
		}},
		{"bulk-reverse", func(start func()) {
			start()
			bench.Bulk(ctx, t.forwardDial, r.target, true, 0, run, nil)
		}},
		{"rtt-64B", func(start func()) {
			start()
			bench.RTT(ctx, t.forwardDial, 64, run, 1<<30)
		}},
		{"setup-32", func(start func()) {
			start()
			bench.Setup(ctx, t.forwardDial, 32, run, 1<<30)
		}},
		{fmt.Sprintf("streams-%d", c.manyN), func(start func()) {
			bench.Many(ctx, t.forwardDial, c.manyN, c.manySize, 32, run, start)
		}},
	}
	if !cpu {
		loads = nil
	}
	for _, l := range loads {
		var wait func()
		l.run(func() { wait = profile(l.name) })
		if wait != nil {
			wait()
		}
		r.logf("profiled %s", l.name)
		time.Sleep(time.Second)
	}

	// Heap and goroutines per idle device, on the same hub: before and
	// after connecting n devices over each transport.
	n := min(1000, maxOf(c.devices))
	for _, tr := range []struct {
		name string
		ws   bool
	}{{"tls", false}, {"ws", true}} {
		ids := make([]string, n)
		for j := range ids {
			ids[j] = fmt.Sprintf("prof-%s-%04d", tr.name, j)
		}
		if err := t.hub.registerDevices(ctx, ids); err != nil {
			return err
		}
		before := filepath.Join(profDir, "devices-"+tr.name+"-before.heap")
		after := filepath.Join(profDir, "devices-"+tr.name+"-after.heap")
		g0, err := goroutines(ctx, t.hub.pprofAddr, "")
		if err != nil {
			return err
		}
		ms0, err := memStats(ctx, t.hub.pprofAddr)
		if err != nil {
			return err
		}
		if err := bench.FetchProfile(ctx, t.hub.pprofAddr, "heap?gc=1", 0, before); err != nil {
			return err
		}
		sim, err := r.deviceSim(t.hub)
		if err != nil {
			return err
		}
		conns, failed, _ := sim.ConnectAll(ctx, ids, tr.ws, 64)
		time.Sleep(3 * time.Second)
		g1, err := goroutines(ctx, t.hub.pprofAddr, filepath.Join(profDir, "devices-"+tr.name+"-goroutines.txt"))
		if err != nil {
			return err
		}
		ms1, err := memStats(ctx, t.hub.pprofAddr)
		if err != nil {
			return err
		}
		if err := bench.FetchProfile(ctx, t.hub.pprofAddr, "heap?gc=1", 0, after); err != nil {
			return err
		}
		bench.CloseAll(conns)
		top, err := bench.TopText(ctx, r.bins["tetherd-pprof"], after, 20, "-sample_index=inuse_space", "-diff_base="+before)
		if err != nil {
			return err
		}
		heap := parseTotal(top)
		ok := n - failed
		per := func(k string) float64 { return float64(ms1[k]-ms0[k]) / float64(max(ok, 1)) }
		r.res.DeviceHeap = append(r.res.DeviceHeap, HeapFig{
			Transport: tr.name, N: ok, HeapPerDevice: heap / float64(max(ok, 1)),
			GoroutinesPerDevice: float64(g1-g0) / float64(max(ok, 1)), Top: top,
			HeapInusePerDevice: per("HeapInuse"), StackPerDevice: per("StackInuse"), SysPerDevice: per("Sys"),
			Goroutines: goroutineGroups(filepath.Join(profDir, "devices-"+tr.name+"-goroutines.txt"), max(ok/10, 2)),
		})
		r.logf("devices %s: %d connected: per device live heap +%.1f KiB (profile), HeapAlloc +%.1f KiB, HeapInuse +%.1f KiB, stacks +%.1f KiB, goroutines +%.2f",
			tr.name, ok, heap/float64(max(ok, 1))/1024, per("HeapAlloc")/1024, per("HeapInuse")/1024, per("StackInuse")/1024, float64(g1-g0)/float64(max(ok, 1)))
		time.Sleep(2 * time.Second)
	}
	return nil
}

var profMu sync.Mutex

func (r *runner) addProfile(p ProfileSummary) {
	profMu.Lock()
	defer profMu.Unlock()
	r.res.Profiles = append(r.res.Profiles, p)
}

func sampleLine(top string) string {
	for line := range strings.SplitSeq(top, "\n") {
		if strings.HasPrefix(line, "Duration") {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// memStats reads the runtime.MemStats a heap profile in text form ends
// with (after a GC): what the heap holds and what goroutine stacks take,
// which a heap profile alone does not show.
func memStats(ctx context.Context, addr string) (map[string]int64, error) {
	f := filepath.Join(os.TempDir(), fmt.Sprintf("tetherbench-memstats-%d.txt", os.Getpid()))
	defer os.Remove(f)
	if err := bench.FetchProfile(ctx, addr, "heap?debug=1&gc=1", 0, f); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "# "), " = ")
		if !ok || strings.Contains(k, " ") {
			continue
		}
		if k == "Stack" { // "Stack = inuse / sys"
			k = "StackInuse"
			v, _, _ = strings.Cut(v, " ")
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			m[k] = n
		}
	}
	if _, ok := m["HeapInuse"]; !ok {
		return nil, fmt.Errorf("no MemStats in the heap profile of %s", addr)
	}
	return m, nil
}

// goroutineGroups lists the goroutine groups of a debug=1 goroutine dump
// holding at least min goroutines: their count and innermost frames
// outside the runtime, to name what each idle device keeps running.
func goroutineGroups(path string, minCount int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for block := range strings.SplitSeq(string(b), "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if len(lines) < 2 {
			continue
		}
		n, err := strconv.Atoi(strings.Fields(lines[0])[0])
		if err != nil || n < minCount {
			continue
		}
		var frames []string
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "#" {
				continue
			}
			fn := f[2]
			if i := strings.LastIndex(fn, "+0x"); i > 0 {
				fn = fn[:i]
			}
			if strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/") {
				continue
			}
			frames = append(frames, fn)
			if len(frames) == 3 {
				break
			}
		}
		out = append(out, fmt.Sprintf("%d × %s", n, strings.Join(frames, " ← ")))
	}
	return out
}

// goroutines reads the count on the first line of the goroutine profile,
// keeping the dump in keep unless it is empty.
func goroutines(ctx context.Context, addr, keep string) (int, error) {
	f := keep
	if f == "" {
		f = filepath.Join(os.TempDir(), fmt.Sprintf("tetherbench-goroutines-%d.txt", os.Getpid()))
		defer os.Remove(f)
	}
	if err := bench.FetchProfile(ctx, addr, "goroutine?debug=1", 0, f); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`goroutine profile: total (\d+)`).FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("no goroutine total from %s", addr)
	}
	return strconv.Atoi(string(m[1]))
}

// parseTotal reads "of X total" from a pprof -top header, in bytes.
func parseTotal(top string) float64 {
	m := regexp.MustCompile(`of (-?[\d.]+)([kMG]?B) total`).FindStringSubmatch(top)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	switch m[2] {
	case "kB":
		v *= 1 << 10
	case "MB":
		v *= 1 << 20
	case "GB":
		v *= 1 << 30
	}
	return v
}
