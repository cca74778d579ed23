package main

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tether-io/tether/bench"
)

// Machine is where the run happened.
type Machine struct {
	CPUs   int
	CPU    string
	Kernel string
	Go     string
	Memory string
	Nofile uint64
	// LoadAvg is /proc/loadavg at the start and the end: the machine is
	// shared, and a load above its cores means figures taken in a crowd.
	LoadAvg [2]string
}

// Lat is a latency pair in µs (RTT) or ms (setup, many).
type Lat struct {
	P50, P99 float64
	N        uint64
}

// SetupFig is one stream-setup run.
type SetupFig struct {
	P50, P99, Rate float64 // ms, ms, set-ups per second
	OK, Errors     int
	LastErr        string `json:",omitempty"`
}

// ManyFig is one run of the many-streams ping-pong.
type ManyFig struct {
	Rate, P50, P99 float64 // msgs/s, ms, ms
	Opened         int
	OpenSec        float64
	Errors         int
	LastErr        string `json:",omitempty"`
}

// DevMem is the hub's RSS with N idle devices connected.
type DevMem struct {
	Transport  string
	N, Failed  int
	RSS0, RSS  int64
	PerDevice  float64 // bytes
	ConnectSec float64
	LastErr    string `json:",omitempty"`
}

// HeapFig is the hub's live heap and goroutines per idle device.
type HeapFig struct {
	Transport           string
	N                   int
	HeapPerDevice       float64 // bytes
	GoroutinesPerDevice float64
	// From runtime.MemStats, after a GC, per device.
	HeapInusePerDevice, StackPerDevice, SysPerDevice float64
	Goroutines                                       []string // the groups each device adds
	Top                                              string
}

// ProfileSummary is one CPU profile, sorted into categories.
type ProfileSummary struct {
	Load, Proc string
	Samples    string
	Shares     []bench.Share
	Top        string `json:"-"`
}

type results struct {
	Command   string
	Source    string // what tetherd and tether were built from
	When      string
	Elapsed   string
	Quick     bool
	Rounds    int
	Spread    map[string][]float64 // per-round values behind a median or merged figure
	Machine   Machine
	Bulk      map[string]map[string]float64 // direction → path → Gbit/s
	CPUPerGB  map[string]map[string]float64 // "forward limit" → process → CPU-s per GB
	CPUPerOp  map[string]map[string]float64 // "rtt tether" → process → CPU per operation (µs, or ms for setup)
	RTT       map[string]Lat                // path → µs
	Setup     map[string]SetupFig           // "path/concurrency"
	Many      map[string]ManyFig
	AgentIdle int64
	// AgentIdleDetail splits the idle agent's memory (pprof build): RSS
	// from smaps_rollup, the rest from runtime.MemStats.
	AgentIdleDetail map[string]int64 `json:",omitempty"`
	AgentBulk       int64
	AgentMany       int64
	HubIdle         int64
	ForwardIdle     int64
	DevMem          []DevMem
	DeviceHeap      []HeapFig
	AgentBinary     int64
	HubBinary       int64
	AuthFlood       *AuthFloodFig `json:",omitempty"`
	WAN             *WANFig       `json:",omitempty"`
	Big             *BigFig       `json:",omitempty"`
	Stalled         *StallFig     `json:",omitempty"`
	WANBulk         *WANBulkFig   `json:",omitempty"`
	Profiles        []ProfileSummary
	ProfileError    string `json:",omitempty"`
}

// row is one line of the table.
type row struct {
	Figure, Unit          string
	Direct, Limit, Tether string
	Ratio                 string // Tether ÷ limit
	Target                string
	Met                   string // "yes", "**no**" or ""
}

func f(v float64, prec int) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func ratio(t, l float64) string {
	if l == 0 || math.IsNaN(t) || math.IsNaN(l) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", t/l)
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func (r *runner) rows() []row {
	res := &r.res
	c := r.cfg
	var rows []row
	for _, d := range []struct{ key, name string }{{"forward", "client → device"}, {"reverse", "device → client"}} {
		b := res.Bulk[d.key]
		if b == nil {
			continue
		}
		rows = append(rows, row{
			Figure: "1. bulk, one stream, " + d.name, Unit: "Gbit/s",
			Direct: f(b[direct], 2), Limit: f(b[limit], 2), Tether: f(b[tether], 2),
			Ratio: ratio(b[tether], b[limit]), Target: "≥ 1.2× limit", Met: met(b[tether] >= 1.2*b[limit]),
		})
	}
	if cp := res.CPUPerGB["forward "+tether]; cp != nil {
		lp := res.CPUPerGB["forward "+limit]
		rows = append(rows, row{
			Figure: "1. CPU per GB, bulk client → device: hub (limit: r2)", Unit: "CPU-s/GB",
			Limit: f(lp["limit-r2"], 2), Tether: f(cp["tetherd"], 2), Direct: "–",
			Ratio: ratio(cp["tetherd"], lp["limit-r2"]),
		})
		rows = append(rows, row{
			Figure: "1. CPU per GB, bulk client → device: agent (limit: r3)", Unit: "CPU-s/GB",
			Limit: f(lp["limit-r3"], 2), Tether: f(cp["agent"], 2), Direct: "–",
			Ratio: ratio(cp["agent"], lp["limit-r3"]),
		})
	}
	if res.RTT != nil {
		rt := res.RTT
		rows = append(rows,
			row{Figure: "2. RTT 64 B, p50", Unit: "µs", Direct: f(rt[direct].P50, 0), Limit: f(rt[limit].P50, 0), Tether: f(rt[tether].P50, 0),
				Ratio: ratio(rt[tether].P50, rt[limit].P50), Target: "≤ 1.1× limit", Met: met(rt[tether].P50 <= 1.1*rt[limit].P50)},
			row{Figure: "2. RTT 64 B, p99", Unit: "µs", Direct: f(rt[direct].P99, 0), Limit: f(rt[limit].P99, 0), Tether: f(rt[tether].P99, 0),
				Ratio: ratio(rt[tether].P99, rt[limit].P99)},
		)
		if np, ok := rt[plain]; ok {
			rows = append(rows, row{Figure: "2. RTT 64 B, p50 / p99, " + withoutSessions, Unit: "µs", Direct: f(rt[direct].P50, 0), Limit: f(rt[limit].P50, 0),
				Tether: f(np.P50, 0) + " / " + f(np.P99, 0), Ratio: ratio(np.P50, rt[limit].P50)})
		}
	}
	rows = append(rows, r.cpuRows("rtt", "2. CPU per 64 B round trip", "µs", 1)...)
	rows = append(rows, r.cpuRowsOf("rtt", plain, "2. CPU per 64 B round trip, "+withoutSessions, "µs", 1)...)
	if res.Setup != nil {
		s := res.Setup
		pair := func(k string) string { return f(s[k].P50, 2) + " / " + f(s[k].P99, 2) }
		for _, via := range []struct{ key, name string }{{sdk, "OpenStream"}, {tether, "connect to tether forward"}} {
			one := s[via.key+"/1"]
			rows = append(rows, row{
				Figure: "3. setup from " + via.name + ", p50 / p99, one at a time", Unit: "ms",
				Direct: pair(direct + "/1"), Limit: pair(limit + "/1"), Tether: pair(via.key + "/1"),
				Ratio: ratio(one.P50, s[limit+"/1"].P50), Target: "≤ 2 / ≤ 10", Met: met(one.P50 <= 2 && one.P99 <= 10),
			})
			rows = append(rows, row{
				Figure: "3. setup from " + via.name + ", p50 / p99, 32 at once", Unit: "ms",
				Direct: pair(direct + "/32"), Limit: pair(limit + "/32"), Tether: pair(via.key + "/32"),
				Ratio: ratio(s[via.key+"/32"].P50, s[limit+"/32"].P50),
			})
			rows = append(rows, row{
				Figure: "3. streams set up per second from " + via.name + ", one at a time", Unit: "/s",
				Direct: f(s[direct+"/1"].Rate, 0), Limit: f(s[limit+"/1"].Rate, 0), Tether: f(one.Rate, 0),
				Ratio: ratio(one.Rate, s[limit+"/1"].Rate),
			})
			c32 := s[via.key+"/32"]
			rows = append(rows, row{
				Figure: "3. streams set up per second from " + via.name + ", 32 at once", Unit: "/s",
				Direct: f(s[direct+"/32"].Rate, 0), Limit: f(s[limit+"/32"].Rate, 0), Tether: f(c32.Rate, 0),
				Ratio: ratio(c32.Rate, s[limit+"/32"].Rate), Target: "≥ 2,000", Met: met(c32.Rate >= 2000),
			})
		}
	}
	if s := res.Setup; s != nil {
		if one, ok := s[plain+"/1"]; ok {
			c32 := s[plain+"/32"]
			rows = append(rows,
				row{Figure: "3. setup from connect to tether forward, p50 / p99, one at a time, " + withoutSessions, Unit: "ms",
					Direct: f(s[direct+"/1"].P50, 2), Limit: f(s[limit+"/1"].P50, 2), Tether: f(one.P50, 2) + " / " + f(one.P99, 2),
					Ratio: ratio(one.P50, s[limit+"/1"].P50)},
				row{Figure: "3. streams set up per second from connect to tether forward, 32 at once, " + withoutSessions, Unit: "/s",
					Direct: f(s[direct+"/32"].Rate, 0), Limit: f(s[limit+"/32"].Rate, 0), Tether: f(c32.Rate, 0),
					Ratio: ratio(c32.Rate, s[limit+"/32"].Rate)},
			)
		}
	}
	rows = append(rows, r.cpuRows("setup", "3. CPU per stream set up (forward, 32 at once)", "ms", 2)...)
	rows = append(rows, r.cpuRowsOf("setup", plain, "3. CPU per stream set up (forward, 32 at once), "+withoutSessions, "ms", 2)...)
	if res.Many != nil {
		m := res.Many
		name := fmt.Sprintf("4. %d streams × 1 KiB ping-pong", c.manyN)
		rows = append(rows,
			row{Figure: name + ", steady state", Unit: "msgs/s", Direct: f(m[direct].Rate, 0), Limit: f(m[limit].Rate, 0), Tether: f(m[tether].Rate, 0),
				Ratio: ratio(m[tether].Rate, m[limit].Rate), Target: "≥ 1.4× limit", Met: met(m[tether].Rate >= 1.4*m[limit].Rate)},
			row{Figure: name + ", p99", Unit: "ms", Direct: f(m[direct].P99, 1), Limit: f(m[limit].P99, 1), Tether: f(m[tether].P99, 1),
				Ratio: ratio(m[tether].P99, m[limit].P99)},
		)
	}
	if np, ok := res.Many[plain]; ok {
		m := res.Many
		name := fmt.Sprintf("4. %d streams × 1 KiB ping-pong, %s", c.manyN, withoutSessions)
		rows = append(rows,
			row{Figure: name + ", steady state", Unit: "msgs/s", Direct: f(m[direct].Rate, 0), Limit: f(m[limit].Rate, 0), Tether: f(np.Rate, 0),
				Ratio: ratio(np.Rate, m[limit].Rate)},
			row{Figure: name + ", p99", Unit: "ms", Direct: f(m[direct].P99, 1), Limit: f(m[limit].P99, 1), Tether: f(np.P99, 1),
				Ratio: ratio(np.P99, m[limit].P99)},
		)
	}
	rows = append(rows, r.cpuRows("streams", fmt.Sprintf("4. CPU per 1 KiB round trip, %d streams", c.manyN), "µs", 1)...)
	rows = append(rows, r.cpuRowsOf("streams", plain, fmt.Sprintf("4. CPU per 1 KiB round trip, %d streams, %s", c.manyN, withoutSessions), "µs", 1)...)
	for _, d := range res.DevMem {
		rows = append(rows, row{
			Figure: fmt.Sprintf("5. hub RSS per idle device, N = %d, %s", d.N, d.Transport), Unit: "KiB",
			Direct: "–", Limit: "–", Tether: f(d.PerDevice/1024, 1), Ratio: "–", Target: "≤ 30", Met: met(d.PerDevice/1024 <= 30),
		})
	}
	for _, h := range res.DeviceHeap {
		if !r.cfg.runs("devices") {
			// The profiling pass measures it on its own hub, with no
			// devices connected unless their load ran.
			break
		}
		rows = append(rows, row{
			Figure: fmt.Sprintf("5. hub per idle device (pprof build, after GC), N = %d, %s: heap in use / goroutine stacks", h.N, transportName(h.Transport)), Unit: "KiB",
			Direct: "–", Limit: "–", Tether: f(h.HeapInusePerDevice/1024, 1) + " / " + f(h.StackPerDevice/1024, 1), Ratio: "–",
		})
	}
	if res.AgentIdle > 0 {
		rows = append(rows,
			row{Figure: "5. agent RSS, idle (connected, no stream yet)", Unit: "MiB", Direct: "–", Limit: "–", Tether: f(mib(res.AgentIdle), 1), Ratio: "–", Target: "≤ 8", Met: met(mib(res.AgentIdle) <= 8)},
		)
		// Both halves or none: a run of some loads would write a 0 over
		// the other's figure.
		if r.cfg.runs("bulk") && r.cfg.runs("streams") {
			rows = append(rows, row{Figure: "5. agent RSS, relaying: bulk / " + fmt.Sprint(c.manyN) + " streams (peak)", Unit: "MiB", Direct: "–", Limit: "–", Tether: f(mib(res.AgentBulk), 1) + " / " + f(mib(res.AgentMany), 1), Ratio: "–"})
		}
	}
	if a := res.AuthFlood; a != nil {
		name := fmt.Sprintf("7. %d streams × 1 KiB ping-pong while %s failing logins/s (%.0f achieved)", a.Streams, thousands(c.floodRate), a.Flood.Rate)
		rows = append(rows,
			row{Figure: name + ": during ÷ without", Unit: "×", Direct: "–", Limit: "–", Tether: f(a.Ratio, 2), Ratio: "–", Target: "≥ 0.8", Met: met(a.Ratio >= 0.8)},
			row{Figure: name + ": without / during", Unit: "msgs/s", Direct: "–", Limit: "–", Tether: f(a.Unloaded, 0) + " / " + f(a.Attack, 0), Ratio: "–"},
			row{Figure: "7. CPU without / during the attack: hub; the attackers' own (benchflood)", Unit: "cores", Direct: "–", Limit: "–",
				Tether: f(a.CPUUnloaded["tetherd"], 2) + " / " + f(a.CPUAttack["tetherd"], 2) + "; " + f(a.CPUAttack["attackers"], 2), Ratio: "–"},
			row{Figure: "7. control: the same attack on a listener that only closes: during ÷ without; attack on the hub ÷ control", Unit: "×", Direct: "–", Limit: "–",
				Tether: f(a.RatioControl, 2) + "; " + f(a.HubShare, 2), Ratio: "–"},
		)
	}
	rows = append(rows, r.manyStreamRows()...)
	rows = append(rows, r.wanBulkRows()...)
	rows = append(rows, row{Figure: "6. agent binary (tether), stripped", Unit: "MiB", Direct: "–", Limit: "–", Tether: f(mib(res.AgentBinary), 1), Ratio: "–", Target: "≤ 10", Met: met(mib(res.AgentBinary) <= 10)})
	return rows
}

// thousands writes a whole number with a comma between thousands.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func transportName(t string) string {
	return map[string]string{"tls": "MQTT/TLS", "ws": "MQTT/WebSocket"}[t]
}

// withoutSessions names the rows of the tunnel whose agent and forwarder
// run without sessions.
const withoutSessions = "without sessions (TETHER_SESSIONS=0)"

// cpuRows compares the CPU per operation of Tether's processes with their
// counterparts in the limit chain: hub with r2, agent with r3, forwarder
// with r1.
func (r *runner) cpuRows(load, figure, unit string, prec int) []row {
	return r.cpuRowsOf(load, tether, figure, unit, prec)
}

// cpuRowsOf is cpuRows for the processes of path (tether or plain, whose
// processes' names end in "-" + plain).
func (r *runner) cpuRowsOf(load, path, figure, unit string, prec int) []row {
	suffix := ""
	if load == "setup" {
		suffix = "/32"
	}
	t, l := r.res.CPUPerOp[load+" "+path+suffix], r.res.CPUPerOp[load+" "+limit+suffix]
	if t == nil || l == nil {
		return nil
	}
	procSuffix := ""
	if path == plain {
		procSuffix = "-" + plain
	}
	var rows []row
	for _, p := range []struct{ name, tether, limit string }{
		{"hub", "tetherd", "limit-r2"}, {"agent", "agent", "limit-r3"}, {"forwarder", "forward", "limit-r1"},
	} {
		v := t[p.tether+procSuffix]
		rows = append(rows, row{
			Figure: fmt.Sprintf("%s: %s (limit: %s)", figure, p.name, strings.TrimPrefix(p.limit, "limit-")), Unit: "CPU " + unit,
			Direct: "–", Limit: f(l[p.limit], prec), Tether: f(v, prec), Ratio: ratio(v, l[p.limit]),
		})
	}
	return rows
}

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nFIGURE\tUNIT\tDIRECT\tLIMIT\tTETHER\tTETHER/LIMIT\tTARGET\tMET")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Figure, r.Unit, r.Direct, r.Limit, r.Tether, r.Ratio, r.Target, strings.Trim(r.Met, "*"))
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// tableHeader opens the Markdown table of results.
const tableHeader = "| figure | unit | direct | limit | Tether | Tether ÷ limit | target | met |\n| --- | --- | ---: | ---: | ---: | ---: | --- | --- |\n"

func markdownTable(rows []row) string {
	var b strings.Builder
	b.WriteString(tableHeader)
	for _, r := range rows {
		b.WriteString(markdownRow(r))
	}
	return b.String()
}

func markdownRow(r row) string {
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Figure, r.Unit, r.Direct, r.Limit, r.Tether, r.Ratio, r.Target, r.Met)
}

const (
	analysisBegin = "<!-- analysis:begin -->"
	analysisEnd   = "<!-- analysis:end -->"
)

// writeResults saves results.json and results.md in the output folder and,
// unless -write-docs=false, the report and its plot in docs/. The
// hand-written analysis between the analysis markers of the existing
// report is kept.
func (r *runner) writeResults(rows []row) error {
	r.res.When = time.Now().UTC().Format("2006-01-02 15:04 UTC")
	r.res.Machine.LoadAvg[1] = loadAvg()
	if err := saveJSON(filepath.Join(r.out, "results.json"), &r.res); err != nil {
		return err
	}
	png := filepath.Join(r.out, "benchmarks.png")
	// A run of some loads leaves the report's plot alone.
	if r.cfg.writeDocs && len(r.cfg.only) == 0 {
		png = strings.TrimSuffix(r.cfg.docs, ".md") + ".png"
	}
	if err := r.plot(png); err != nil {
		return err
	}
	md := r.markdown(rows, filepath.Base(png))
	if err := os.WriteFile(filepath.Join(r.out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if !r.cfg.writeDocs {
		return nil
	}
	old, err := os.ReadFile(r.cfg.docs)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	doc := string(old)
	if len(r.cfg.only) > 0 && strings.Contains(doc, tableHeader) {
		if doc, err = r.splice(doc, rows); err != nil {
			return err
		}
		r.logf("writing the rows of %s into %s", strings.Join(r.onlyLoads(), ", "), r.cfg.docs)
		return os.WriteFile(r.cfg.docs, []byte(doc), 0o644)
	}
	r.logf("writing %s and %s", r.cfg.docs, png)
	return os.WriteFile(r.cfg.docs, []byte(md+"\n"+keptTail(doc)), 0o644)
}

// keptTail is what a full run keeps of the report doc: the hand-written
// analysis and whatever follows it, or an empty analysis.
func keptTail(doc string) string {
	if i, j := strings.Index(doc, analysisBegin), strings.Index(doc, analysisEnd); i >= 0 && j > i {
		return doc[i:]
	}
	return analysisBegin + "\n## Analysis\n\n(Not written yet: read the profiles above.)\n" + analysisEnd + "\n"
}

// onlyLoads are the loads of -only, in the order they run.
func (r *runner) onlyLoads() []string {
	var ls []string
	for _, l := range loads {
		if r.cfg.only[l] {
			ls = append(ls, l)
		}
	}
	return ls
}

// updatedPrefix begins the lines that say what a run of some loads
// (-only) changed in a report a full run wrote.
const updatedPrefix = "Updated since by a run of some loads"

// splice lays this run's rows over the report doc, written by an earlier
// run: a row replaces the row of the same figure, or goes after the last
// row of its number (at the table's end if none); the parts of loads 8 to
// 10 that ran replace theirs; a line under the first paragraph says what
// was updated, when, and from what. The rest of doc is left as it is.
func (r *runner) splice(doc string, rows []row) (string, error) {
	hdr := strings.Index(doc, tableHeader)
	start := hdr + len(tableHeader)
	end := start
	for end < len(doc) && strings.HasPrefix(doc[end:], "| ") {
		nl := strings.IndexByte(doc[end:], '\n')
		if nl < 0 {
			end = len(doc)
			break
		}
		end += nl + 1
	}
	table := strings.SplitAfter(doc[start:end], "\n")
	if len(table) > 0 && table[len(table)-1] == "" {
		table = table[:len(table)-1]
	}
	for _, rw := range rows {
		line := markdownRow(rw)
		if i := slices.IndexFunc(table, func(l string) bool { return rowFigure(l) == rw.Figure }); i >= 0 {
			table[i] = line
			continue
		}
		at := len(table)
		for i, l := range table {
			if figureNumber(rowFigure(l)) == figureNumber(rw.Figure) {
				at = i + 1
			}
		}
		table = slices.Insert(table, at, line)
	}
	doc = doc[:start] + strings.Join(table, "") + doc[end:]

	if r.res.WAN != nil || r.res.Big != nil || r.res.Stalled != nil {
		if !strings.Contains(doc, manyBegin) {
			sec := r.manyStreamsSection() + "\n"
			if i := strings.Index(doc, analysisBegin); i >= 0 {
				doc = doc[:i] + sec + doc[i:]
			} else {
				doc += "\n" + sec
			}
		}
		for _, l := range manyLoads {
			part := r.manyPart(l)
			if part == "" {
				continue
			}
			begin, end := partMarkers(l)
			i, j := strings.Index(doc, begin), strings.Index(doc, end)
			if i < 0 || j < i {
				return "", fmt.Errorf("%s: the part of %s is not between its markers", r.cfg.docs, l)
			}
			doc = doc[:i+len(begin)] + "\n" + part + doc[j:]
		}
	}

	stamp := fmt.Sprintf("%s (`%s`) on %s, tetherd and tether from %s: the rows of %s (load average %s at its start, %s at its end).",
		updatedPrefix, r.res.Command, r.res.When, r.res.Source, strings.Join(r.onlyLoads(), ", "), r.res.Machine.LoadAvg[0], r.res.Machine.LoadAvg[1])
	lines := strings.Split(doc, "\n")
	// A line of an earlier run whose rows this run all replaced goes, with
	// the blank line before it.
	for i := 0; i < len(lines); i++ {
		if r.replacesUpdate(lines[i]) {
			from := i
			if i > 0 && lines[i-1] == "" {
				from--
			}
			lines = slices.Delete(lines, from, i+1)
			i = from - 1
		}
	}
	at := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "Written by") || strings.HasPrefix(l, updatedPrefix) {
			at = i
		}
		if strings.HasPrefix(l, "## ") {
			break
		}
	}
	if at >= 0 {
		lines = slices.Insert(lines, at+1, "", stamp)
	}
	return strings.Join(lines, "\n"), nil
}

// replacesUpdate reports whether line says what an earlier run of some
// loads updated, all of them loads of this run.
func (r *runner) replacesUpdate(line string) bool {
	if !strings.HasPrefix(line, updatedPrefix) {
		return false
	}
	_, after, ok := strings.Cut(line, ": the rows of ")
	if !ok {
		return false
	}
	list, _, _ := strings.Cut(after, " (")
	for l := range strings.SplitSeq(list, ", ") {
		if !r.cfg.only[l] {
			return false
		}
	}
	return true
}

// rowFigure is the figure of a Markdown row of the table.
func rowFigure(line string) string {
	f := strings.Split(line, " | ")
	if len(f) < 2 {
		return ""
	}
	return strings.TrimPrefix(f[0], "| ")
}

// figureNumber is the load's number a figure begins with ("8." of "8. WAN
// ..."), or "".
func figureNumber(figure string) string {
	n, _, _ := strings.Cut(figure, " ")
	return n
}

func (r *runner) markdown(rows []row, pngName string) string {
	res := &r.res
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `bench/run.sh` (which runs `%s`) on %s; the run took %s. tetherd and tether built from %s.", res.Command, res.When, res.Elapsed, res.Source)
	if res.Quick {
		b.WriteString(" **A -quick run: short loads, not the figures to quote.**")
	}
	b.WriteString(` Everything above the Analysis section is rewritten by each run.

## How it is measured

The harness builds ` + "`tetherd` and `tether`" + ` and starts, as separate processes on
loopback with TLS on (the hub's generated ECDSA P-256 certificate), a hub,
an agent (` + "`tether agent`" + `, its default MQTT over WebSocket control
channel) and a forwarder (` + "`tether forward`" + `). One in-process TCP target serves
every path, so only the path differs:

- **direct**: the load generator dials the target;
- **limit**: client → r1 ─TLS→ r2 ─TLS→ r3 → target, three ` + "`io.Copy`" + ` relay
  processes (` + "`bench/cmd/benchrelay`" + `) with the hub's certificate on the two
  middle legs: Tether's topology and TLS with nothing else;
- **Tether**: client → ` + "`tether forward`" + ` ─WSS→ ` + "`tetherd`" + ` ←WSS─ ` + "`tether agent`" + ` → target;
  stream setup is also timed from the service SDK's ` + "`OpenStream`" + `;
- **without sessions**: the same, on a second hub, agent and forwarder whose agent and forwarder
  run with ` + "`TETHER_SESSIONS=0`" + ` (a connection per stream), for loads 2 to 4: what sessions
  change, in the same run.

Loads 1 to 3 run in ` + "`-rounds`" + ` rounds, the three paths interleaved in each, because the
machine is shared: bulk figures are the median of the rounds, latencies come from the merged samples.
(1) one connection, 256 KiB writes, 1 s warm-up then 5 s counted where the bytes arrive;
(2) 64-byte echo round trips on one open connection, 3 s after 200 warm-up;
(3) dial → first echoed byte → close, one at a time and 32 at once, 3 s each;
(4) all streams opened first (32 at a time), then each ping-pongs 1 KiB for 10 s;
(5) raw MQTT 3.1.1 devices (CONNECT + SUBSCRIBE, then idle) from 16 loopback source
addresses to a fresh hub, RSS (VmRSS) growth ÷ N; the agent's VmRSS idle and its peak while relaying;
(6) ` + "`CGO_ENABLED=0 go build -ldflags='-s -w' ./cmd/tether`" + ` (the agent, stripped or not, is built without cgo, as docs/guide.md builds it for devices);
(7) authflood: a hub with its default limits, a fresh agent and forwarder; ` + fmt.Sprint(r.cfg.floodStreams) + ` streams through
the forwarder ping-pong 1 KiB without pause, counted ` + r.cfg.floodQuiet.String() + ` before an attack, ` + r.cfg.floodAttack.String() + ` during it
and ` + r.cfg.floodQuiet.String() + ` after it, on the same streams; the attack (` + "`bench/cmd/benchflood`" + `, its own process)
starts ` + thousands(r.cfg.floodRate) + ` logins a second from 8 other loopback addresses (127.0.1.1–8), each a fresh
TCP connection, a full TLS handshake and an MQTT CONNECT for the agent's device with a SAS token signed
by a wrong key, one in ten over MQTT/WebSocket; the figure is the streams' rate during ÷ before and after.
With 2 or more CPUs (` + "`-authflood-pin`" + `, on by default) the hub, agent, forwarder and load generator run on CPU 0
and the attackers on the others, in every window: a real attacker's CPU is elsewhere, and the figure is the hub's own cost.
A control runs the same attack against a listener that only accepts and closes.
(8) to (10), the loads of many streams on one connection (WAN first byte, ` + thousands(float64(r.cfg.bigN)) + ` streams,
stalled streams): in their section below.
(11) wanbulk: the agent and the target in a network namespace joined to the hub's through TUN devices by
` + "`bench.WANLink`" + `, which forwards packets ` + r.cfg.wanHold.String() + ` each way behind a ` + fmt.Sprintf("%.0f", r.cfg.wanRate/1e6) + ` Mbit/s bottleneck whose
queue (one bandwidth-delay product) drops beyond it, so every TCP connection crosses it end to end; one stream's
bulk through the forwarder, ` + r.cfg.wanBulkWarm.String() + ` warm-up then ` + r.cfg.wanBulkN.String() + ` counted, each way, beside a plain TCP and a TLS
connection to the same target across the same link, and again with the agent and the forwarder on TETHER_SESSIONS=0.
Then the tunnel is restarted with builds that serve ` + "`net/http/pprof`" + ` (added by a
` + "`go build -overlay`" + ` file, the tree untouched) and each load is re-run under 5 s CPU profiles
of the hub, agent and forwarder; and the hub's heap is profiled before and after 1,000 idle devices.
Profiles and logs stay in ` + "`bench/out/`" + `.

`)
	m := res.Machine
	fmt.Fprintf(&b, "## Machine\n\n- CPUs (`nproc`): %d, %s\n- memory: %s\n- kernel: %s\n- Go: %s\n- open files limit (`ulimit -n`, raised to the hard limit): %d\n- load average (1, 5, 15 min) at the start / end of the run: %s / %s\n\n",
		m.CPUs, m.CPU, m.Memory, m.Kernel, m.Go, m.Nofile, m.LoadAvg[0], m.LoadAvg[1])
	b.WriteString("## Results\n\n")
	b.WriteString(markdownTable(rows))
	fmt.Fprintf(&b, "\n![Throughput and latency: direct, limit, Tether](%s)\n\n", pngName)
	var notes []string
	for k, s := range res.Setup {
		if s.Errors > 0 {
			notes = append(notes, fmt.Sprintf("setup %s: %d of %d failed (%s)", k, s.Errors, s.OK+s.Errors, s.LastErr))
		}
	}
	for k, s := range res.Many {
		notes = append(notes, fmt.Sprintf("%d streams %s: %d opened in %.1f s, %d errors %s", r.cfg.manyN, k, s.Opened, s.OpenSec, s.Errors, s.LastErr))
	}
	for _, d := range res.DevMem {
		notes = append(notes, fmt.Sprintf("%s N = %d: hub RSS %.1f → %.1f MiB, %d failed, connected in %.1f s", d.Transport, d.N, mib(d.RSS0), mib(d.RSS), d.Failed, d.ConnectSec))
	}
	for k, vs := range res.Spread {
		var parts []string
		for _, v := range vs {
			parts = append(parts, fmt.Sprintf("%.3g", v))
		}
		notes = append(notes, fmt.Sprintf("rounds of %s: %s", k, strings.Join(parts, ", ")))
	}
	if a := res.AuthFlood; a != nil {
		notes = append(notes, fmt.Sprintf("authflood: %d of %d streams opened, %d errors %s; msgs/s before %.0f, during %.0f, after %.0f; p99 %.1f ms without, %.1f ms during",
			a.Opened, a.Streams, a.Errors, a.LastErr, a.Before, a.Attack, a.After, a.P99Unloaded, a.P99Attack))
		fl := a.Flood
		notes = append(notes, fmt.Sprintf("authflood attack: %d attempts started in %.1f s (%d skipped, %s in flight at most), %.0f/s finished, p50 %.1f ms / p99 %.1f ms each; answers: %s; of them over WebSocket: %s",
			fl.Attempts, fl.Seconds, fl.Skipped, "512", fl.Rate, fl.P50, fl.P99, strings.Join(bench.SortedOutcomes(fl.Outcomes), ", "), strings.Join(bench.SortedOutcomes(fl.WSOutcome), ", ")))
		var hc []string
		for _, k := range sortedKeys(a.HubRefusals) {
			hc = append(hc, fmt.Sprintf("%s %.0f", k, a.HubRefusals[k]))
		}
		notes = append(notes, "authflood: the hub's counters over the attack: "+strings.Join(hc, ", "))
		notes = append(notes, fmt.Sprintf("authflood CPU, in cores of %d: without the attack %s; during it %s", res.Machine.CPUs, fmtCores(a.CPUUnloaded), fmtCores(a.CPUAttack)))
	}
	notes = append(notes, fmt.Sprintf("idle RSS: hub %.1f MiB, forwarder %.1f MiB; hub binary stripped %.1f MiB", mib(res.HubIdle), mib(res.ForwardIdle), mib(res.HubBinary)))
	sort.Strings(notes)
	b.WriteString("Run notes:\n\n")
	for _, n := range notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	b.WriteString("\n" + r.manyStreamsSection())
	if len(res.Profiles) > 0 {
		b.WriteString("\n## Where the CPU goes\n\nFlat CPU time of each process under each load (Tether path), by category, in % of the samples taken.\n")
		byLoad := map[string]map[string]ProfileSummary{}
		var loads []string
		for _, p := range res.Profiles {
			if byLoad[p.Load] == nil {
				byLoad[p.Load] = map[string]ProfileSummary{}
				loads = append(loads, p.Load)
			}
			byLoad[p.Load][p.Proc] = p
		}
		order := map[string]int{"bulk-forward": 0, "bulk-reverse": 1, "rtt-64B": 2, "setup-32": 3, "authflood-attack": 10}
		sort.Slice(loads, func(i, j int) bool {
			oi, ok := order[loads[i]]
			if !ok {
				oi = 9
			}
			oj, ok := order[loads[j]]
			if !ok {
				oj = 9
			}
			return oi < oj
		})
		procs := []string{"hub", "agent", "forward"}
		for _, l := range loads {
			fmt.Fprintf(&b, "\n**%s**\n\n| category | hub | agent | forwarder |\n| --- | ---: | ---: | ---: |\n", l)
			cats := map[string]bool{}
			var catOrder []string
			for _, p := range procs {
				for _, s := range byLoad[l][p].Shares {
					if !cats[s.Name] {
						cats[s.Name] = true
						catOrder = append(catOrder, s.Name)
					}
				}
			}
			// Flat categories first, the cumulative call trees after them.
			sort.SliceStable(catOrder, func(i, j int) bool {
				return !strings.HasPrefix(catOrder[i], "cum:") && strings.HasPrefix(catOrder[j], "cum:")
			})
			for _, cat := range catOrder {
				fmt.Fprintf(&b, "| %s |", cat)
				for _, p := range procs {
					v := 0.0
					for _, s := range byLoad[l][p].Shares {
						if s.Name == cat {
							v = s.Percent
						}
					}
					fmt.Fprintf(&b, " %.1f |", v)
				}
				b.WriteString("\n")
			}
			b.WriteString("| *samples* |")
			for _, p := range procs {
				fmt.Fprintf(&b, " %s |", strings.TrimPrefix(byLoad[l][p].Samples, "Duration: "))
			}
			b.WriteString("\n")
		}
	}
	if len(res.DeviceHeap) > 0 {
		b.WriteString("\n## The hub's heap per idle device\n\n")
		for _, h := range res.DeviceHeap {
			fmt.Fprintf(&b, "%s, %d devices, per device: %.1f KiB of heap in use and %.1f KiB of goroutine stacks (runtime.MemStats after a GC); %.1f KiB of live heap in the (sampled) heap profile; %.2f goroutines:\n\n",
				transportName(h.Transport), h.N, h.HeapInusePerDevice/1024, h.StackPerDevice/1024, h.HeapPerDevice/1024, h.GoroutinesPerDevice)
			for _, g := range h.Goroutines {
				fmt.Fprintf(&b, "- %s\n", g)
			}
			fmt.Fprintf(&b, "\n<details><summary>pprof -top -sample_index=inuse_space (after − before)</summary>\n\n```\n%s\n```\n</details>\n\n", h.Top)
		}
	}
	if d := res.AgentIdleDetail; d != nil {
		fmt.Fprintf(&b, "\n## The idle agent's memory\n\nThe agent built with the pprof hook, connected and idle: RSS %.1f MiB, of which %.1f MiB anonymous and %.1f MiB file-backed (the binary's code and data, as far as touched). The Go runtime holds %.1f MiB (Sys): heap in use %.1f MiB, heap kept but unused %.1f MiB, stacks %.1f MiB, GC metadata %.1f MiB, other %.1f MiB.\n",
			mib(d["RSS"]), mib(d["anonymous"]), mib(d["file-backed (code, data)"]), mib(d["Sys"]), mib(d["HeapInuse"]), mib(d["HeapIdle-HeapReleased"]), mib(d["StackInuse"]), mib(d["GCSys"]), mib(d["OtherSys"]))
	}
	if res.ProfileError != "" {
		fmt.Fprintf(&b, "\nProfiling failed: %s\n", res.ProfileError)
	}
	return b.String()
}

func (r *runner) plot(path string) error {
	res := &r.res
	series := []bench.Series{
		{Name: "direct", Color: color.RGBA{160, 160, 160, 255}},
		{Name: "limit", Color: color.RGBA{70, 110, 200, 255}},
		{Name: "Tether", Color: color.RGBA{235, 130, 40, 255}},
	}
	get := func(m map[string]float64, k string) float64 {
		if v, ok := m[k]; ok {
			return v
		}
		return -1
	}
	paths := []string{direct, limit, tether}
	var panels []bench.Panel
	if res.Bulk != nil {
		p := bench.Panel{Title: "bulk Gbit/s", Groups: []string{"fwd", "rev"}}
		for _, d := range []string{"forward", "reverse"} {
			var g []float64
			for _, k := range paths {
				g = append(g, get(res.Bulk[d], k))
			}
			p.Values = append(p.Values, g)
		}
		panels = append(panels, p)
	}
	if res.RTT != nil {
		p := bench.Panel{Title: "RTT 64 B, us", Groups: []string{"p50", "p99"}}
		for _, q := range []int{50, 99} {
			var g []float64
			for _, k := range paths {
				l := res.RTT[k]
				g = append(g, map[int]float64{50: l.P50, 99: l.P99}[q])
			}
			p.Values = append(p.Values, g)
		}
		panels = append(panels, p)
	}
	if res.Setup != nil {
		p := bench.Panel{Title: "setup ms (forward)", Groups: []string{"p50", "p99"}}
		for _, q := range []int{50, 99} {
			var g []float64
			for _, k := range paths {
				s := res.Setup[k+"/1"]
				g = append(g, map[int]float64{50: s.P50, 99: s.P99}[q])
			}
			p.Values = append(p.Values, g)
		}
		panels = append(panels, p)
	}
	if res.Many != nil {
		// Two panels: one scale per unit.
		var g1, g2 []float64
		for _, k := range paths {
			g1 = append(g1, res.Many[k].Rate/1000)
			g2 = append(g2, res.Many[k].P99)
		}
		panels = append(panels,
			bench.Panel{Title: fmt.Sprintf("%d streams", r.cfg.manyN), Groups: []string{"kmsg/s"}, Values: [][]float64{g1}},
			bench.Panel{Title: fmt.Sprintf("%d streams", r.cfg.manyN), Groups: []string{"p99 ms"}, Values: [][]float64{g2}})
	}
	if len(panels) == 0 {
		return nil // a run without stream loads has nothing to plot
	}
	return bench.PlotPNG(path, "Tether, direct and limit: loopback, TLS on", series, panels)
}

func sortedKeys(m map[string]float64) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
