package main

import (
	"strings"
	"testing"
)

// A report as a full run leaves it, cut short.
const fullReport = "# Benchmarks\n\nWritten by `bench/run.sh` on a day.\n\n## Results\n\n```\nsame\nsame\n\n\n```\n\n" + tableHeader +
	"| 2. RTT 64 B, p50 | µs | 21 | 285 | 416 | 1.46× | ≤ 1.1× limit | **no** |\n" +
	"| 6. agent binary (tether), stripped | MiB | – | – | 7.0 | – | ≤ 10 | yes |\n" +
	"\nRun notes:\n\n- a note\n\n" + analysisBegin + "\n## Analysis\n\nkept\n" + analysisEnd + "\n\n## Choosing the multiplexer\n\nkept too\n"

func spliceRunner(only ...string) *runner {
	r := &runner{cfg: &config{only: map[string]bool{}, wanPause: 300_000_000}}
	for _, l := range only {
		r.cfg.only[l] = true
	}
	r.res.Command = "go run ./bench/cmd/tetherbench -only " + strings.Join(only, ",")
	r.res.When, r.res.Source = "today", "commit abc"
	return r
}

func TestSpliceReplacesAndAddsRows(t *testing.T) {
	r := spliceRunner("wan")
	r.res.WAN = &WANFig{HoldMs: 25, Cold: 220, P50: 105, P90: 110, Min: 100, Max: 120, N: 30, Samples: []float64{105}}
	r.res.AgentBinary = 7 << 20
	doc, err := r.splice(fullReport, r.rows())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| 2. RTT 64 B, p50 | µs | 21 | 285 | 416 |",                                                       // a row of a load not run stays
		"| 6. agent binary (tether), stripped | MiB | – | – | 7.0 | – | ≤ 10 | yes |\n| 8. WAN first byte", // new rows at the end
		"| 105.0 | – | ≤ 55 | **no** |",
		"### 8. WAN first byte", "(streams10k: not measured in this run.)",
		updatedPrefix + " (`go run ./bench/cmd/tetherbench -only wan`) on today",
		"kept\n" + analysisEnd + "\n\n## Choosing the multiplexer\n\nkept too\n",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("the spliced report lacks %q:\n%s", want, doc)
		}
	}
	if strings.Count(doc, "6. agent binary") != 1 {
		t.Errorf("the binary's row is not replaced but doubled:\n%s", doc)
	}
	if i, j := strings.Index(doc, manyBegin), strings.Index(doc, analysisBegin); i < 0 || i > j {
		t.Errorf("the section of loads 8 to 10 is not before the analysis")
	}

	// A later run of another load replaces its part and rows only.
	r2 := spliceRunner("stalled")
	r2.res.Stalled = &StallFig{Want: 10, Opened: 10, After: ProcMem{Hub: 10 << 10}}
	doc2, err := r2.splice(doc, r2.rows())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### 8. WAN first byte", "### 10. 10 stalled streams", "| 8. WAN first byte", "| 10. 10 stalled streams: hub RSS per stalled stream | KiB |"} {
		if !strings.Contains(doc2, want) {
			t.Errorf("after a second run, the report lacks %q", want)
		}
	}
	if strings.Count(doc2, updatedPrefix) != 2 {
		t.Errorf("want a line for each run of some loads:\n%s", doc2)
	}

	// A run of both replaces both lines with its own.
	r3 := spliceRunner("stalled", "wan")
	r3.res.WAN, r3.res.Stalled = r.res.WAN, r2.res.Stalled
	doc3, err := r3.splice(doc2, r3.rows())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(doc3, updatedPrefix) != 1 || !strings.Contains(doc3, "same\nsame\n\n\n```") || strings.Count(doc3, "\n\n\n") != 1 {
		t.Errorf("a run of both loads leaves lines of earlier runs or blank lines behind:\n%s", doc3[:400])
	}
}

func TestSpliceRefusesABrokenPart(t *testing.T) {
	r := spliceRunner("wan")
	r.res.WAN = &WANFig{HoldMs: 25, N: 1, Samples: []float64{1}}
	begin, _ := partMarkers("wan")
	broken := strings.Replace(fullReport, analysisBegin, manyBegin+"\n"+begin+"\n(no end)\n"+manyEnd+"\n"+analysisBegin, 1)
	if _, err := r.splice(broken, r.rows()); err == nil || !strings.Contains(err.Error(), "wan") {
		t.Fatalf("splice of a part without its end marker: %v", err)
	}
}

func TestKeptTail(t *testing.T) {
	if got := keptTail(fullReport); !strings.HasPrefix(got, analysisBegin) || !strings.HasSuffix(got, "kept too\n") {
		t.Errorf("keptTail drops what follows the analysis: %q", got)
	}
	if got := keptTail("# Benchmarks\n"); !strings.Contains(got, "Not written yet") {
		t.Errorf("keptTail of a report without analysis: %q", got)
	}
}

// A run of some loads writes no row it did not measure: the profiling
// pass's hub heap per device has no devices unless their load ran, and
// the agent's RSS relaying needs both bulk and the many streams.
func TestRowsOfSomeLoadsOnly(t *testing.T) {
	r := spliceRunner("bulk", "rtt")
	r.res.DeviceHeap = []HeapFig{{Transport: "tls", N: 1000, HeapInusePerDevice: -278 << 10}}
	r.res.AgentIdle, r.res.AgentBulk = 8<<20, 24<<20
	for _, rw := range r.rows() {
		for _, not := range []string{"hub per idle device (pprof build", "agent RSS, relaying"} {
			if strings.Contains(rw.Figure, not) {
				t.Errorf("a run of bulk and rtt wrote the row %q", rw.Figure)
			}
		}
	}
	r = spliceRunner()
	r.res.DeviceHeap = []HeapFig{{Transport: "tls", N: 1000}}
	r.res.AgentIdle = 8 << 20
	var n int
	for _, rw := range r.rows() {
		if strings.Contains(rw.Figure, "hub per idle device (pprof build") || strings.Contains(rw.Figure, "agent RSS, relaying") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("a full run wrote %d of the two rows", n)
	}
}
