package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// figure is one line of the report: a value per path per round.
type figure struct {
	name, unit string
	better     string // "higher" or "lower": how the ratio to direct reads
	vals       map[string][]float64
}

type results struct {
	order []string
	figs  map[string]*figure
	notes []string
}

func (r *results) add(name, unit, better, path string, v float64) {
	f, ok := r.figs[name]
	if !ok {
		f = &figure{name: name, unit: unit, better: better, vals: map[string][]float64{}}
		r.figs[name] = f
		r.order = append(r.order, name)
	}
	f.vals[path] = append(f.vals[path], v)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func orchestrate(names []string, window, rounds int) error {
	start := time.Now()
	dir, err := os.MkdirTemp("", "muxcmp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	certFile, keyFile, err := writeCert(dir)
	if err != nil {
		return err
	}
	paths, err := startPaths(names, window, certFile, keyFile)
	defer func() {
		for _, p := range paths {
			if p.hub != nil {
				p.hub.stop()
			}
			if p.device != nil {
				p.device.stop()
			}
		}
	}()
	if err != nil {
		return err
	}
	r := &results{figs: map[string]*figure{}}
	fail := func(p *path, load string, err error) {
		r.notes = append(r.notes, fmt.Sprintf("%s, %s: %v", p.name, load, err))
	}
	type load struct {
		name   string
		direct bool
		run    func(p *path) error
	}
	loads := []load{
		{"setup", true, func(p *path) error {
			p50, rate, err := setup(p, time.Second, 1)
			r.add("setup p50, one at a time", "ms", "lower", p.name, p50)
			r.add("setups/s, one at a time", "/s", "higher", p.name, rate)
			return err
		}},
		{"setup32", true, func(p *path) error {
			_, rate, err := setup(p, time.Second, 32)
			r.add("setups/s, 32 at once", "/s", "higher", p.name, rate)
			return err
		}},
		{"many", true, func(p *path) error {
			rate, cpu, err := manyStreams(p, 1000)
			r.add("1,000 streams × 1 KiB ping-pong", "msgs/s", "higher", p.name, rate)
			if p.hub != nil {
				r.add("hub CPU per 1 KiB round trip, 1,000 streams", "µs", "lower", p.name, cpu)
			}
			return err
		}},
		{"bulk", true, func(p *path) error {
			g, cpu, err := bulk(p)
			r.add("bulk, one stream, device → service", "Gbit/s", "higher", p.name, g)
			if p.hub != nil {
				r.add("hub CPU per GB, bulk", "CPU-s/GB", "lower", p.name, cpu)
			}
			return err
		}},
		{"stall", false, func(p *path) error {
			ratio, err := stallOthers(p)
			r.add("99 streams' rate beside 1 stalled ÷ without it", "×", "higher", p.name, ratio)
			return err
		}},
		{"stallmem", false, func(p *path) error {
			m, err := stallMemory(p, 1000)
			r.add("hub heap in use per stalled stream, 1,000 stalled", "KiB", "lower", p.name, m.heapKiB)
			r.add("hub goroutine stacks per stalled stream", "KiB", "lower", p.name, m.stackKiB)
			r.add("bytes a stalled stream's writer got rid of", "KiB", "lower", p.name, m.writtenKiB)
			probe := 0.0
			if m.probe {
				probe = 1
			}
			r.add("a new stream echoes beside 1,000 stalled (1 yes, 0 no)", "", "higher", p.name, probe)
			return err
		}},
	}
	for round := range rounds {
		for _, l := range loads {
			// The order of the paths turns each round, so that none is
			// always the first after a quiet moment.
			for i := range paths {
				p := paths[(i+round)%len(paths)]
				if p.hub == nil && !l.direct {
					continue
				}
				if err := l.run(p); err != nil {
					fail(p, l.name, err)
				}
			}
		}
		fmt.Fprintf(os.Stderr, "round %d of %d done at %s\n", round+1, rounds, time.Since(start).Round(time.Second))
	}
	printReport(r, paths, window, rounds, time.Since(start))
	return nil
}

func printReport(r *results, paths []*path, window, rounds int, took time.Duration) {
	var load [3]float64
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Sscan(string(b), &load[0], &load[1], &load[2])
	}
	fmt.Printf("muxcmp: %d rounds in %s, %s, %d CPUs, window per stream %d KiB, load average %.2f %.2f %.2f at the end\n\n",
		rounds, took.Round(time.Second), runtime.Version(), runtime.NumCPU(), window>>10, load[0], load[1], load[2])
	names := make([]string, len(paths))
	for i, p := range paths {
		names[i] = p.name
	}
	fmt.Printf("| figure | unit | %s | %s |\n", strings.Join(names, " | "), strings.Join(names[1:], " ÷ direct | ")+" ÷ direct")
	fmt.Printf("| --- | --- |%s\n", strings.Repeat(" ---: |", 2*len(names)-1))
	for _, name := range r.order {
		f := r.figs[name]
		cells := make([]string, 0, 2*len(names))
		for _, n := range names {
			if v, ok := f.vals[n]; ok {
				cells = append(cells, fmt.Sprintf("%.4g", median(v)))
			} else {
				cells = append(cells, "–")
			}
		}
		d, hasDirect := f.vals["direct"]
		for _, n := range names[1:] {
			if v, ok := f.vals[n]; ok && hasDirect && median(d) != 0 {
				cells = append(cells, fmt.Sprintf("%.2f×", median(v)/median(d)))
			} else {
				cells = append(cells, "–")
			}
		}
		fmt.Printf("| %s | %s | %s |\n", f.name, f.unit, strings.Join(cells, " | "))
	}
	fmt.Println("\nRounds (each path's value in each round):")
	for _, name := range r.order {
		f := r.figs[name]
		var parts []string
		for _, n := range names {
			if v, ok := f.vals[n]; ok {
				s := make([]string, len(v))
				for i, x := range v {
					s[i] = fmt.Sprintf("%.4g", x)
				}
				parts = append(parts, n+" "+strings.Join(s, ", "))
			}
		}
		fmt.Printf("- %s: %s\n", f.name, strings.Join(parts, "; "))
	}
	for _, n := range r.notes {
		fmt.Println("- error:", n)
	}
}
