package main

// The loads that measure what carrying many streams on one connection
// between Tether's ends and the hub is for (docs/protocol.md, "Many streams
// on one connection"): the first byte of a stream across a WAN, 10,000
// streams held open, and what stalled streams cost in memory.

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tether-io/tether/bench"
)

// WANFig is the WAN first-byte load: a new connection to `tether forward`
// to its first echoed byte, with the agent's every connection to the hub
// crossing a delaying link.
type WANFig struct {
	HoldMs float64 // the link's delay each way
	// MQTTTLS: the agent's control channel was MQTT over TLS, through the
	// MQTT port's link, not MQTT over WebSocket through the HTTPS one.
	MQTTTLS bool `json:",omitempty"`
	// Cold is the first connection after the agent connected; P50, P90,
	// Min and Max are over the N connections after it (ms).
	Cold               float64
	P50, P90, Min, Max float64
	N, Errors          int
	LastErr            string `json:",omitempty"`
	// LinkConns are the connections the HTTPS and the MQTT link accepted
	// over the load: the agent's legs, none of the forwarder's.
	LinkConns [2]int64
	Samples   []float64
}

// RoundTrips is d in round trips of the link.
func (w *WANFig) RoundTrips(d float64) float64 { return d / (2 * w.HoldMs) }

// ProcMem is the RSS of the hub, the agent and the forwarder, in bytes.
type ProcMem struct{ Hub, Agent, Forward int64 }

// BigFig is the load of many streams held open at once.
type BigFig struct {
	Want, Opened   int
	OpenSec        float64
	Rate, P50, P99 float64 // msgs/s, ms, ms
	Errors         int
	OpenErr        string `json:",omitempty"`
	LastErr        string `json:",omitempty"`
	// Before: settled, no stream; Open: all streams open, before the
	// ping-pong; Peak: the largest during it.
	Before, Open, Peak ProcMem
	// FDs are each process's open descriptors with all streams open,
	// beside its limit; Refused, the first line of its log that says it
	// ran out of them.
	FDs     map[string][2]int
	Refused map[string]string `json:",omitempty"`
}

// StallFig is the stalled-streams load.
type StallFig struct {
	Want, Opened, Errors int
	FirstErr             string `json:",omitempty"`
	FillSec              float64
	// Written is what a stream's writer got rid of: median, least, most.
	Written [3]int64
	// Before and After are settled RSS without streams and with the
	// stalled ones full.
	Before, After ProcMem
	// The hub's heap in use and goroutine stacks (runtime.MemStats after
	// a GC, pprof build), and its goroutines, before and after.
	HubHeap, HubStacks [2]int64
	HubGoroutines      [2]int
	// Echo: a new stream beside the stalled ones echoed.
	Echo    bool
	EchoErr string `json:",omitempty"`
	// TCPMem is the kernel's TCP memory, all sockets of the machine
	// (/proc/net/sockstat, bytes), before and after; Pressure, that the
	// fill was ended at the kernel's pressure threshold (tcp_mem[1]) to
	// spare the shared machine, not by the writes' own stop.
	TCPMem   [2]int64
	Pressure bool `json:",omitempty"`
	// Netns is the socket buffers of the network namespace the load ran
	// in, "" when it ran in the machine's.
	Netns string `json:",omitempty"`
}

// per is the growth from before to after per n, in bytes.
func per(before, after int64, n int) float64 {
	if n <= 0 {
		return 0
	}
	return float64(after-before) / float64(n)
}

// measureWAN times connections to `tether forward` to their first echoed
// byte while the agent reaches the hub across a delaying link (load 8).
func (r *runner) measureWAN(ctx context.Context) error {
	c := r.cfg
	t, err := r.startTunnelWith(ctx, tunnelConfig{suffix: "-wan", dir: filepath.Join(r.out, "data", "wan"), fresh: true, wan: c.wanHold, mqttTLS: c.wanTLS})
	if err != nil {
		return err
	}
	defer r.stopTunnel(t)
	r.logf("wan: hub %s, agent through links %s (HTTPS) and %s (MQTT), %v each way; forwarder %s direct",
		t.hub.httpAddr, t.links[0].Addr(), t.links[1].Addr(), c.wanHold, t.fwdAddr)
	fig := &WANFig{HoldMs: ms(c.wanHold), MQTTTLS: c.wanTLS}
	cold, err := bench.FirstByte(ctx, t.forwardDial)
	if err != nil {
		return fmt.Errorf("wan: the first stream: %w", err)
	}
	fig.Cold = ms(cold)
	var h bench.Hist
	for range c.wanN {
		// A stream's end crosses the link too (its close each way) before
		// its connections are reused; the pause keeps one stream's end
		// out of the next one's setup.
		time.Sleep(c.wanPause)
		d, err := bench.FirstByte(ctx, t.forwardDial)
		if err != nil {
			fig.Errors++
			fig.LastErr = err.Error()
			continue
		}
		h.Add(d)
		fig.Samples = append(fig.Samples, ms(d))
		fig.N++
	}
	if fig.N == 0 {
		return fmt.Errorf("wan: no stream echoed: %s", fig.LastErr)
	}
	fig.P50, fig.P90 = ms(h.Quantile(0.5)), ms(h.Quantile(0.9))
	fig.Min, fig.Max = slices.Min(fig.Samples), slices.Max(fig.Samples)
	fig.LinkConns = [2]int64{t.links[0].Accepted(), t.links[1].Accepted()}
	r.res.WAN = fig
	r.logf("wan: first byte cold %.1f ms (%.2f RTT); then p50 %.1f ms (%.2f RTT), p90 %.1f ms, %.1f–%.1f ms (%d, %d failed %s); links accepted %d (HTTPS) / %d (MQTT) connections",
		fig.Cold, fig.RoundTrips(fig.Cold), fig.P50, fig.RoundTrips(fig.P50), fig.P90, fig.Min, fig.Max, fig.N, fig.Errors, fig.LastErr, fig.LinkConns[0], fig.LinkConns[1])
	return nil
}

// memOf reads the three processes' RSS now.
func memOf(t *tunnel) ProcMem {
	var m ProcMem
	m.Hub, _ = t.hub.proc.RSS()
	m.Agent, _ = t.agent.RSS()
	m.Forward, _ = t.fwd.RSS()
	return m
}

// settledMem waits d, then takes the least of a few readings of each
// process's RSS, as settledRSS does for one.
func settledMem(t *tunnel, d time.Duration) ProcMem {
	time.Sleep(d)
	var m ProcMem
	for i := range 5 {
		n := memOf(t)
		if i == 0 {
			m = n
		}
		m = ProcMem{min(m.Hub, n.Hub), min(m.Agent, n.Agent), min(m.Forward, n.Forward)}
		time.Sleep(200 * time.Millisecond)
	}
	return m
}

// measureBig opens many streams through `tether forward` to one agent,
// holds them, ping-pongs 1 KiB on each and reads the processes' memory
// and descriptors (load 9). The target is a process of its own: the
// harness holds one end of every stream already.
func (r *runner) measureBig(ctx context.Context) error {
	c := r.cfg
	tp, err := r.start("benchtarget", nil, r.bins["benchtarget"])
	if err != nil {
		return err
	}
	defer r.stop(tp)
	line, err := tp.WaitLog(ctx, "listening ", 30*time.Second)
	if err != nil {
		return err
	}
	target := strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	t, err := r.startTunnelWith(ctx, tunnelConfig{suffix: "-big", dir: filepath.Join(r.out, "data", "big"), fresh: true, target: target})
	if err != nil {
		return err
	}
	defer r.stopTunnel(t)
	if _, err := bench.FirstByte(ctx, t.forwardDial); err != nil {
		return fmt.Errorf("%d streams: the tunnel does not echo: %w", c.bigN, err)
	}
	fig := &BigFig{Want: c.bigN, FDs: map[string][2]int{}, Refused: map[string]string{}}
	fig.Before = settledMem(t, time.Second)
	procs := []*bench.Proc{t.hub.proc, t.agent, t.fwd, tp}
	var samplers []*rssSampler
	res := bench.ManyWith(ctx, t.forwardDial, bench.ManyConfig{
		N: c.bigN, Size: c.manySize, OpenConc: 32, Dur: c.bigDur,
		// Past a process's descriptors every open fails, each only at
		// its timeout: the first failure ends the opening.
		StopOnError: true, OpenTimeout: 5 * time.Second,
		Ready: func() {
			fig.Open = memOf(t)
			for _, p := range procs {
				n, _ := p.FDs()
				l, _ := p.NofileLimit()
				fig.FDs[p.Name] = [2]int{n, l}
			}
			samplers = []*rssSampler{sampleRSS(t.hub.proc), sampleRSS(t.agent), sampleRSS(t.fwd)}
		},
	})
	if len(samplers) == 3 {
		fig.Peak = ProcMem{samplers[0].Max(), samplers[1].Max(), samplers[2].Max()}
	}
	fig.Opened, fig.OpenSec = res.Opened, res.OpenTime.Seconds()
	fig.Rate, fig.P50, fig.P99 = res.Rate(), ms(res.Hist.Quantile(0.5)), ms(res.Hist.Quantile(0.99))
	fig.Errors, fig.OpenErr, fig.LastErr = res.Errors, errString(res.OpenErr), errString(res.LastErr)
	for _, p := range procs {
		if l := firstLogLine(p.Log, "too many open files"); l != "" {
			fig.Refused[p.Name] = l
		}
	}
	r.res.Big = fig
	r.logf("%d streams: %d opened in %.1f s (first failed open: %s); %.0f msg/s, p50 %.1f ms, p99 %.1f ms (%d errors %s)",
		c.bigN, fig.Opened, fig.OpenSec, fig.OpenErr, fig.Rate, fig.P50, fig.P99, fig.Errors, fig.LastErr)
	r.logf("%d streams: RSS with them open (peak): hub %.1f (%.1f) MiB, agent %.1f (%.1f) MiB, forwarder %.1f (%.1f) MiB; descriptors %s",
		c.bigN, mib(fig.Open.Hub), mib(fig.Peak.Hub), mib(fig.Open.Agent), mib(fig.Peak.Agent), mib(fig.Open.Forward), mib(fig.Peak.Forward), fmtFDs(fig.FDs))
	for name, l := range fig.Refused {
		r.logf("%d streams: %s logged: %s", c.bigN, name, l)
	}
	return nil
}

// fmtFDs writes "name open/limit" for each process, in a fixed order.
func fmtFDs(m map[string][2]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d/%d", k, m[k][0], m[k][1]))
	}
	return strings.Join(parts, ", ")
}

// firstLogLine returns the first line of a log holding s
// (case-insensitive), trimmed, or "".
func firstLogLine(path, s string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s = strings.ToLower(s)
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(strings.ToLower(line), s) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// tcpMem reads the kernel's TCP memory in use (/proc/net/sockstat, pages)
// and its pressure threshold (tcp_mem's second field), in bytes.
func tcpMem() (inUse, pressure int64) {
	page := int64(os.Getpagesize())
	if b, err := os.ReadFile("/proc/net/sockstat"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "TCP:" {
				continue
			}
			for i := 1; i+1 < len(f); i++ {
				if f[i] == "mem" {
					v, _ := strconv.ParseInt(f[i+1], 10, 64)
					inUse = v * page
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_mem"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 3 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			pressure = v * page
		}
	}
	return inUse, pressure
}

// stallRate is each stalled stream's writing pace, in bytes a second.
// Unpaced, the first streams' bytes flow fast enough for the kernel to
// grow their sockets' buffers to its maximum on every hop (tens of MiB
// each here: tcp_rmem allows 32 MiB), and a hundred streams take the
// whole machine's TCP memory to its pressure threshold before the rest
// hold anything; at this pace buffers keep their initial size and every
// stream fills alike.
const stallRate = 256 << 10

// measureStalled fills streams whose target never reads, through `tether
// forward`, until their writers stop, and reads what the hub, the agent
// and the forwarder hold for them (load 10). Builds with the pprof hook,
// for the hub's heap.
func (r *runner) measureStalled(ctx context.Context) error {
	c := r.cfg
	tg, err := bench.StartTarget("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer tg.Close()
	t, err := r.startTunnelWith(ctx, tunnelConfig{suffix: "-stalled", dir: filepath.Join(r.out, "data", "stalled"), pprof: true, fresh: true, target: tg.Addr()})
	if err != nil {
		return err
	}
	defer r.stopTunnel(t)
	if _, err := bench.FirstByte(ctx, t.forwardDial); err != nil {
		return fmt.Errorf("stalled: the tunnel does not echo: %w", err)
	}
	fig := &StallFig{Want: c.stalledN}
	heap := func(i int) error {
		ms, err := memStats(ctx, t.hub.pprofAddr)
		if err != nil {
			return err
		}
		fig.HubHeap[i], fig.HubStacks[i] = ms["HeapInuse"], ms["StackInuse"]
		fig.HubGoroutines[i], err = goroutines(ctx, t.hub.pprofAddr, "")
		return err
	}
	fig.Before = settledMem(t, 2*time.Second)
	if err := heap(0); err != nil {
		return err
	}
	fig.TCPMem[0], _ = tcpMem()
	res := bench.Stall(ctx, t.forwardDial, bench.StallConfig{N: c.stalledN, OpenConc: 32, Rate: stallRate, Quiet: time.Second, Limit: c.stalledMax}, func() bool {
		// Every socket on the way holds its buffers too; past the
		// kernel's pressure threshold the whole shared machine would
		// feel it.
		used, pressure := tcpMem()
		if c.tcpPressure > 0 {
			pressure = c.tcpPressure
		}
		fig.Pressure = pressure > 0 && used > pressure
		return fig.Pressure
	})
	defer res.Close()
	fig.Opened, fig.Errors, fig.FirstErr, fig.FillSec = res.Opened, res.Errors, errString(res.FirstErr), res.Fill.Seconds()
	if w := slices.Sorted(slices.Values(res.Written)); len(w) > 0 {
		fig.Written = [3]int64{w[len(w)/2], w[0], w[len(w)-1]}
	}
	fig.TCPMem[1], _ = tcpMem()
	fig.After = settledMem(t, 2*time.Second)
	if err := heap(1); err != nil {
		return err
	}
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = bench.FirstByte(ectx, t.forwardDial)
	cancel()
	fig.Echo, fig.EchoErr = err == nil, errString(err)
	r.res.Stalled = fig
	n := fig.Opened
	r.logf("stalled: %d of %d streams filled in %.1f s (%d errors %s%s); each writer got rid of %.0f KiB (median; %.0f–%.0f)",
		n, fig.Want, fig.FillSec, fig.Errors, fig.FirstErr, map[bool]string{true: "; ended at the kernel's TCP memory pressure"}[fig.Pressure],
		float64(fig.Written[0])/1024, float64(fig.Written[1])/1024, float64(fig.Written[2])/1024)
	r.logf("stalled: per stream: hub RSS %.0f KiB, heap in use %.0f KiB, stacks %.1f KiB, goroutines %.1f; agent RSS %.0f KiB; forwarder RSS %.0f KiB; kernel TCP memory %.0f KiB; a new stream echoes: %v %s",
		per(fig.Before.Hub, fig.After.Hub, n)/1024, per(fig.HubHeap[0], fig.HubHeap[1], n)/1024, per(fig.HubStacks[0], fig.HubStacks[1], n)/1024,
		per(int64(fig.HubGoroutines[0]), int64(fig.HubGoroutines[1]), n), per(fig.Before.Agent, fig.After.Agent, n)/1024,
		per(fig.Before.Forward, fig.After.Forward, n)/1024, per(fig.TCPMem[0], fig.TCPMem[1], n)/1024, fig.Echo, fig.EchoErr)
	return nil
}

// manyStreamRows are the table's rows of loads 8 to 10.
func (r *runner) manyStreamRows() []row {
	res := &r.res
	var rows []row
	only := func(figure, unit, v, target, met string) row {
		return row{Figure: figure, Unit: unit, Direct: "–", Limit: "–", Tether: v, Ratio: "–", Target: target, Met: met}
	}
	if w := res.WAN; w != nil {
		rtt := 2 * w.HoldMs
		goal := rtt + 5 // one round trip and 5 ms
		rows = append(rows,
			only(fmt.Sprintf("8. WAN first byte, device %s ms RTT from the hub: connect to tether forward → first echoed byte, p50 of %d after the first", f(rtt, 0), r.cfg.wanN),
				"ms", f(w.P50, 1), "≤ "+f(goal, 0), met(w.P50 <= goal)),
			only(fmt.Sprintf("8. WAN first byte in round trips of %s ms: p50 / the first connection (cold)", f(rtt, 0)),
				"RTT", f(w.RoundTrips(w.P50), 2)+" / "+f(w.RoundTrips(w.Cold), 2), "≤ 1 + 5 ms", ""),
			only("8. WAN first byte: the first connection (cold) / p90", "ms", f(w.Cold, 1)+" / "+f(w.P90, 1), "", ""),
		)
	}
	if b := res.Big; b != nil {
		rows = append(rows,
			only(fmt.Sprintf("9. streams held open at once through tether forward, of %s tried", thousands(float64(b.Want))),
				"streams", thousands(float64(b.Opened)), thousands(float64(b.Want)), met(b.Opened >= b.Want)),
			only(fmt.Sprintf("9. 1 KiB ping-pong on every stream held open (of %s), steady state", thousands(float64(b.Want))), "msgs/s", f(b.Rate, 0), "", ""),
			only(fmt.Sprintf("9. 1 KiB ping-pong on every stream held open (of %s), p99", thousands(float64(b.Want))), "ms", f(b.P99, 1), "", ""),
			only(fmt.Sprintf("9. RSS with every stream open (of %s): hub / agent / forwarder", thousands(float64(b.Want))), "MiB",
				f(mib(b.Open.Hub), 1)+" / "+f(mib(b.Open.Agent), 1)+" / "+f(mib(b.Open.Forward), 1), "", ""),
		)
	}
	if s := res.Stalled; s != nil {
		n := s.Opened
		rows = append(rows,
			only(fmt.Sprintf("10. %s stalled streams: hub RSS per stalled stream", thousands(float64(s.Want))), "KiB", f(per(s.Before.Hub, s.After.Hub, n)/1024, 0), "", ""),
			only("10. hub heap in use / goroutine stacks per stalled stream (pprof build, after GC)", "KiB",
				f(per(s.HubHeap[0], s.HubHeap[1], n)/1024, 0)+" / "+f(per(s.HubStacks[0], s.HubStacks[1], n)/1024, 1), "", ""),
			only("10. agent / forwarder RSS per stalled stream", "KiB",
				f(per(s.Before.Agent, s.After.Agent, n)/1024, 0)+" / "+f(per(s.Before.Forward, s.After.Forward, n)/1024, 0), "", ""),
			only("10. bytes a stalled stream's writer got rid of (median)", "KiB", f(float64(s.Written[0])/1024, 0), "", ""),
		)
	}
	return rows
}

// The report's section on loads 8 to 10 is marked, and so is each load's
// part of it, so that a run of some of them (-only) replaces their parts.
const (
	manyBegin = "<!-- manystreams:begin -->"
	manyEnd   = "<!-- manystreams:end -->"
)

// manyLoads are the loads of the section, in its order.
var manyLoads = []string{"wan", "streams10k", "stalled"}

func partMarkers(load string) (begin, end string) {
	return "<!-- manystreams:" + load + ":begin -->", "<!-- manystreams:" + load + ":end -->"
}

// manyStreamsSection is the whole section, each load's part as this run
// measured it or marked as not measured.
func (r *runner) manyStreamsSection() string {
	var b strings.Builder
	b.WriteString(manyBegin + "\n")
	b.WriteString(`## Many streams on one connection: the figures it is for

Three loads measure what carrying many streams on one connection between
Tether's ends and the hub (docs/protocol.md, *Many streams on one
connection*) is meant to change, each on a hub, agent and forwarder of its
own (rows 8 to 10 above). ` + "`bench/run.sh -only wan,streams10k,stalled`" + ` runs
them alone (about two minutes) and replaces only their rows and parts here.
`)
	for _, l := range manyLoads {
		begin, end := partMarkers(l)
		b.WriteString("\n" + begin + "\n")
		if part := r.manyPart(l); part != "" {
			b.WriteString(part)
		} else {
			fmt.Fprintf(&b, "(%s: not measured in this run.)\n", l)
		}
		b.WriteString(end + "\n")
	}
	b.WriteString(manyEnd + "\n")
	return b.String()
}

// manyPart is one load's part of the section, "" when it did not run.
func (r *runner) manyPart(load string) string {
	res := &r.res
	var b strings.Builder
	stamp := fmt.Sprintf("*Measured %s, tetherd and tether from %s; load average %s at the run's start.*\n", res.When, res.Source, res.Machine.LoadAvg[0])
	switch load {
	case "wan":
		w := res.WAN
		if w == nil {
			return ""
		}
		rtt := f(2*w.HoldMs, 0)
		fmt.Fprintf(&b, `### 8. WAN first byte

The device is %s ms away from the hub (%s ms each way), the service next to
it. Between the agent and the hub the harness puts a delaying link
(`+"`bench.Delay`"+`, in the harness's process): a TCP proxy that holds each chunk
it reads for %s ms, in each direction, and writes the chunks on in order.
It ends TCP on both sides, so it delays round trips and not bulk rates
(its windows and acknowledgements are loopback's: no figure of
throughput is taken across it). The kernel answers a new connection's
SYN at once, so the link puts the handshake's round trip on the
connecting side's first bytes instead: they reach the far side no sooner
than one round trip after the accept and a hold, as behind TCP's
handshake on a real link. There are two links, one before each of the hub's ports:
the agent is given the HTTPS link as its hub (`+"`HostName`"+` of its connection
string) and the MQTT link as `+"`--mqtt-addr`"+`, and the hub is started with
`+"`--public-url https://`"+`*the HTTPS link* so that the streaming URLs it sends
the device name the link, not the hub (the hub's own address would take
the device's stream legs around it). The service's connection string
names the hub itself, so `+"`tether forward`"+` reaches the hub directly.

What each byte crosses: the client's connection to `+"`tether forward`"+` and the
forwarder's opening of the stream (TLS and the WebSocket upgrade of the
one-request opening) stay on loopback. The hub's stream request to the
device goes down the agent's control channel, MQTT over WebSocket on the
HTTPS port (the agent's default transport), through the HTTPS link: %s ms.
The agent dials the target (loopback) and the streaming URL, through the
HTTPS link: a pooled TLS connection's upgrade, or a new connection's TLS
handshake first, each message %s ms one way. The echo then crosses the
link both ways: the byte from the hub to the agent, %s ms, the target's
echo back, %s ms. A session between the agent and the hub, once built,
goes to the same HTTPS port and through the same link. The MQTT link is
there for `+"`--transport tls`"+`; with the default transport it carries nothing.

The first connection after the agent connected is reported alone (it
pays what the first stream pays once: a new stream connection, its TCP
and TLS handshakes, today; the lazily opened session with sessions; and
today, again, any stream that finds no connection in the agent's pool,
whose idle connections live 30 s); then %d
connections, one at a time, %v apart so that one stream's end (its close
frames cross the link too) is over before the next begins: dial to the
first echoed byte (the target's echo of the mode byte), then close.

`, rtt, f(w.HoldMs, 0), f(w.HoldMs, 0), f(w.HoldMs, 0), f(w.HoldMs, 0), f(w.HoldMs, 0), f(w.HoldMs, 0), w.N, r.cfg.wanPause)
		if w.MQTTTLS {
			b.WriteString("In this run the agent's control channel was MQTT over TLS (`-wan-mqtt-tls`), through the MQTT link.\n\n")
		}
		fmt.Fprintf(&b, "%s\nThe first connection: %.1f ms, %.2f round trips. The %d after it: p50 %.1f ms (%.2f round trips), p90 %.1f ms, from %.1f to %.1f ms; %d failed%s. The target with sessions: one round trip and 5 ms, %s ms. The HTTPS link accepted %d connections over the load and the MQTT link %d: the agent's control channel and its stream connections; the forwarder's legs do not cross them.\n\nThe samples (ms): %s.\n",
			stamp, w.Cold, w.RoundTrips(w.Cold), w.N, w.P50, w.RoundTrips(w.P50), w.P90, w.Min, w.Max, w.Errors, strings.TrimSuffix(" ("+w.LastErr+")", " ()"), f(2*w.HoldMs+5, 0), w.LinkConns[0], w.LinkConns[1], joinFloats(w.Samples, 1))
	case "streams10k":
		bg := res.Big
		if bg == nil {
			return ""
		}
		fmt.Fprintf(&b, `### 9. %s streams on one agent

Through `+"`tether forward`"+` (as the 1,000-stream figure, row 4): the load
generator opens %s connections to the forwarder, 32 at a time, each
echoing its mode byte before it counts as open, holds them all, then
ping-pongs 1 KiB on every one of them for %v. The target is a process of
its own (`+"`bench/cmd/benchtarget`"+`): the harness already holds one end of
every stream. A stream with a connection of its own at each hop takes
two descriptors in each of the forwarder, the hub and the agent (the
hub: the forwarder's and the agent's; the agent: the hub's and the
target's); streams that share a session take one at the forwarder and
the agent (the client's, the target's) and none at the hub. The opening ends at the first open that fails (5 s each), and
the ping-pong runs on the streams open by then. RSS is read once all are
open and at its peak during the ping-pong; descriptors (`+"`/proc/PID/fd`"+`)
once all are open, beside each process's limit.

`, thousands(float64(bg.Want)), thousands(float64(bg.Want)), r.cfg.bigDur)
		fmt.Fprintf(&b, "%s\n%s of %s streams opened in %.1f s", stamp, thousands(float64(bg.Opened)), thousands(float64(bg.Want)), bg.OpenSec)
		if bg.OpenErr != "" {
			fmt.Fprintf(&b, "; the first open that failed: `%s`", bg.OpenErr)
		}
		fmt.Fprintf(&b, ". Ping-pong: %.0f msgs/s, p50 %.1f ms, p99 %.1f ms (%d errors%s).", bg.Rate, bg.P50, bg.P99, bg.Errors, strings.TrimSuffix("; the last: "+bg.LastErr, "; the last: "))
		if bg.Opened > 0 {
			perStream := func(proc string) float64 { return float64(bg.FDs[proc][0]) / float64(bg.Opened) }
			fmt.Fprintf(&b, " Descriptors per stream held: hub %.2f, agent %.2f, forwarder %.2f.", perStream("tetherd-big"), perStream("agent-big"), perStream("forward-big"))
		}
		b.WriteString("\n\n")
		b.WriteString("| process | RSS before (MiB) | with the streams open | peak during the ping-pong | descriptors open / limit |\n| --- | ---: | ---: | ---: | ---: |\n")
		for _, p := range []struct {
			name, proc      string
			before, at, top int64
		}{
			{"hub (tetherd)", "tetherd-big", bg.Before.Hub, bg.Open.Hub, bg.Peak.Hub},
			{"agent", "agent-big", bg.Before.Agent, bg.Open.Agent, bg.Peak.Agent},
			{"forwarder", "forward-big", bg.Before.Forward, bg.Open.Forward, bg.Peak.Forward},
			{"target (benchtarget)", "benchtarget", 0, 0, 0},
		} {
			fd := bg.FDs[p.proc]
			if p.before == 0 {
				fmt.Fprintf(&b, "| %s | – | – | – | %d / %d |\n", p.name, fd[0], fd[1])
				continue
			}
			fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f | %d / %d |\n", p.name, mib(p.before), mib(p.at), mib(p.top), fd[0], fd[1])
		}
		if len(bg.Refused) > 0 {
			b.WriteString("\nWhat the processes logged when they ran out of descriptors (first line each):\n\n")
			for _, k := range slices.Sorted(maps.Keys(bg.Refused)) {
				fmt.Fprintf(&b, "- %s: `%s`\n", k, bg.Refused[k])
			}
		}
		if bg.Opened < bg.Want {
			fmt.Fprintf(&b, "\nThe machine's limit on open files is %d, soft and hard, and cannot be raised here (no CAP_SYS_RESOURCE): at two descriptors per stream in each of the forwarder, the hub and the agent, no connection-per-stream path holds %s streams in one process. With sessions, each of them holds one connection for all its streams.\n",
				res.Machine.Nofile, thousands(float64(bg.Want)))
		}
	case "stalled":
		s := res.Stalled
		if s == nil {
			return ""
		}
		n := s.Opened
		fmt.Fprintf(&b, `### 10. %s stalled streams

Through `+"`tether forward`"+`, on builds with the pprof hook (to read the hub's
heap): %s streams whose target reads its mode byte and nothing more,
opened 32 at a time; the load generator writes 32 KiB at a time to each
without pause until the bytes written, all streams together, have not
grown for 1 s (at most %v). Every buffer on the way is full then: the
forwarder's, the hub's and the agent's, and the kernel's socket buffers
of each hop, which no RSS counts (the kernel's TCP memory is given
apart). RSS is the least of five readings 2 s after the fill and before
the first stream, ÷ the streams; the hub's heap in use and goroutine
stacks come from runtime.MemStats after a GC. Then one new stream must
echo beside the stalled ones within 5 s.

Each writer is paced at %s KiB a second, and the load runs in a network
namespace of its own (the harness starts a copy of itself there; loopback
only) whose socket buffers are capped: tcp_rmem and tcp_wmem are set per
namespace, while the kernel's TCP memory (tcp_mem) is one budget for the
whole machine. On loopback, with its 64 KiB segments, a send buffer
starts at megabytes and the receive buffers of a fast stream grow to
tcp_rmem's maximum (32 MiB here): unpaced and uncapped, a stalled stream
took 15 to 25 MiB of kernel memory, and 100 of them took the machine's
TCP memory past its pressure threshold, where every TCP connection of the
machine is starved (the hub's own connection to its embedded NATS timed
out). The processes' memory depends on the receive buffers too: what a
read returns is what a relay's buffer holds, so larger receive buffers
fill more of the hub's buffers (see the Analysis).

`, thousands(float64(s.Want)), thousands(float64(s.Want)), r.cfg.stalledMax, f(float64(stallRate)/1024, 0))
		if s.Netns != "" {
			fmt.Fprintf(&b, "This run's namespace: %s.\n\n", s.Netns)
		} else {
			b.WriteString("This run had no namespace of its own (`-stalled-netns=false`, or the machine refused one): the machine's socket buffers, the fill stopped at the kernel's pressure threshold if it came to that.\n\n")
		}
		fmt.Fprintf(&b, "%s\n%s of %s streams held stalled, filled in %.1f s (%d failed to open or were cut by the path%s)%s. A writer got rid of %.0f KiB (median; %.0f to %.0f).\n\n",
			stamp, thousands(float64(n)), thousands(float64(s.Want)), s.FillSec, s.Errors, strings.TrimSuffix("; the first: "+s.FirstErr, "; the first: "),
			map[bool]string{true: "; the fill was ended when the machine's TCP memory passed the kernel's pressure threshold (tcp_mem), to spare the shared machine"}[s.Pressure],
			float64(s.Written[0])/1024, float64(s.Written[1])/1024, float64(s.Written[2])/1024)
		b.WriteString("| per stalled stream | KiB |\n| --- | ---: |\n")
		for _, v := range []struct {
			name string
			val  float64
		}{
			{"hub RSS", per(s.Before.Hub, s.After.Hub, n)},
			{"hub heap in use (after GC)", per(s.HubHeap[0], s.HubHeap[1], n)},
			{"hub goroutine stacks", per(s.HubStacks[0], s.HubStacks[1], n)},
			{"agent RSS", per(s.Before.Agent, s.After.Agent, n)},
			{"forwarder RSS", per(s.Before.Forward, s.After.Forward, n)},
			{"kernel TCP memory, all sockets of the machine", per(s.TCPMem[0], s.TCPMem[1], n)},
		} {
			fmt.Fprintf(&b, "| %s | %.1f |\n", v.name, v.val/1024)
		}
		fmt.Fprintf(&b, "\nRSS before → after: hub %.1f → %.1f MiB, agent %.1f → %.1f MiB, forwarder %.1f → %.1f MiB; the hub's goroutines %d → %d (%.1f per stream). A new stream beside them echoed: %s.\n",
			mib(s.Before.Hub), mib(s.After.Hub), mib(s.Before.Agent), mib(s.After.Agent), mib(s.Before.Forward), mib(s.After.Forward),
			s.HubGoroutines[0], s.HubGoroutines[1], per(int64(s.HubGoroutines[0]), int64(s.HubGoroutines[1]), n),
			map[bool]string{true: "yes", false: "no (" + s.EchoErr + ")"}[s.Echo])
	}
	return b.String()
}

func joinFloats(vs []float64, prec int) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = f(v, prec)
	}
	return strings.Join(parts, ", ")
}
