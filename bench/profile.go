package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// FetchProfile saves a profile served by net/http/pprof at addr: kind is
// "profile" (CPU, for seconds) or "heap", "goroutine".
func FetchProfile(ctx context.Context, addr, kind string, seconds int, out string) error {
	url := "http://" + addr + "/debug/pprof/" + kind
	if kind == "profile" {
		url += "?seconds=" + strconv.Itoa(seconds)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds+30)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Share is one category's part of a CPU profile.
type Share struct {
	Name    string
	Percent float64
}

// cumulative are call trees whose whole cost (cum) says more than any flat
// category: a handshake spreads over dozens of crypto functions.
var cumulative = []struct {
	name string
	re   *regexp.Regexp
}{
	{"cum: TLS handshakes", regexp.MustCompile(`^crypto/tls\.\(\*Conn\)\.handshakeContext$`)},
	{"cum: TLS record I/O (Read+Write)", regexp.MustCompile(`^crypto/tls\.\(\*Conn\)\.(Read|Write)$`)},
	{"cum: garbage collector (background)", regexp.MustCompile(`^runtime\.gcBgMarkWorker$`)},
	{"cum: HTTP server (REST calls, upgrades)", regexp.MustCompile(`^net/http\.\(\*conn\)\.serve$`)},
	{"cum: logging", regexp.MustCompile(`^log/slog\.\(\*Logger\)\.log$`)},
}

// categories sort a profile's functions (by flat time) into what the
// relay notes say matter: syscalls, AES-GCM, handshakes, scheduling,
// garbage collection, copies. The first match wins.
var categories = []struct {
	name string
	re   *regexp.Regexp
}{
	{"syscalls (read/write, in kernel)", regexp.MustCompile(`^(syscall\.|internal/runtime/syscall|runtime/internal/syscall|golang\.org/x/sys/unix)`)},
	{"scheduler, wake-ups, netpoll", regexp.MustCompile(`^runtime\.(futex|netpoll|epoll|usleep|osyield|schedule|findRunnable|stealWork|park_m|ready|runqgrab|runqsteal|mcall|gopark|goready|wakep|startm|stopm|notesleep|notewakeup|lock2|unlock2|checkTimers|execute|casgstatus|resetspinning|nanotime|procyield|selectgo|chanrecv|chansend)`)},
	{"AES-GCM (record encryption)", regexp.MustCompile(`(aes|gcm|GCM|ghash|gcmAes|ctrBlocks)`)},
	{"handshake crypto (ECDHE, ECDSA, ML-KEM, X.509, hashes)", regexp.MustCompile(`^(crypto/|vendor/golang\.org/x/crypto|golang\.org/x/crypto|math/big)`)},
	{"GC and allocation", regexp.MustCompile(`^runtime\.(gc|mallocgc|scanobject|scanObject|tryDeferToSpanScan|markroot|greyobject|findObject|bgsweep|sweep|heapBits|mspan|\(\*mspan|\(\*mcache|\(\*mcentral|\(\*mheap|\(\*gcWork|memclrNoHeapPointers|wbBuf|bulkBarrier|scanblock|scanstack|nextFreeFast|deductAssist|typePointers|spanOf|pageIndexOf|newobject|makeslice|growslice)`)},
	{"memmove (copies)", regexp.MustCompile(`^runtime\.memmove`)},
	{"WebSocket masking", regexp.MustCompile(`gobwas/ws\.Cipher`)},
	{"MQTT broker", regexp.MustCompile(`mochi-mqtt|paho`)},
	{"NATS", regexp.MustCompile(`nats-io`)},
	{"logging", regexp.MustCompile(`^log/slog|^log\.|^fmt\.`)},
	{"HTTP", regexp.MustCompile(`^net/http|^net/textproto|^bufio`)},
}

// Summarize runs go tool pprof -top on a CPU profile and returns the top
// lines (for the report's appendix) and the category shares, largest first.
func Summarize(ctx context.Context, bin, profile string, lines int) (string, []Share, error) {
	cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=2000", bin, profile)
	out, err := cmd.Output()
	if err != nil {
		return "", nil, fmt.Errorf("go tool pprof %s: %w", profile, err)
	}
	var (
		top      []string
		share    = map[string]float64{}
		cumShare = map[string]float64{}
		body     bool
	)
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.Contains(line, "flat%") {
			body = true
			top = append(top, line)
			continue
		}
		if !body {
			if strings.HasPrefix(line, "Duration") || strings.HasPrefix(line, "Showing") {
				top = append(top, line)
			}
			continue
		}
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		if len(top) < lines+3 {
			top = append(top, line)
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
		if err != nil {
			continue
		}
		fn := strings.Join(f[5:], " ")
		if cum, err := strconv.ParseFloat(strings.TrimSuffix(f[4], "%"), 64); err == nil {
			for _, c := range cumulative {
				if c.re.MatchString(fn) {
					cumShare[c.name] = max(cumShare[c.name], cum)
				}
			}
		}
		name := "other"
		for _, c := range categories {
			if c.re.MatchString(fn) {
				name = c.name
				break
			}
		}
		share[name] += pct
	}
	var shares []Share
	for k, v := range share {
		shares = append(shares, Share{k, v})
	}
	sort.Slice(shares, func(i, j int) bool { return shares[i].Percent > shares[j].Percent })
	// Cumulative shares after the flat ones, in a fixed order.
	for _, c := range cumulative {
		shares = append(shares, Share{c.name, cumShare[c.name]})
	}
	return strings.Join(top, "\n"), shares, nil
}

// TopText runs go tool pprof -top on any profile (heap: -sample_index
// given in extra) and returns its first lines.
func TopText(ctx context.Context, bin, profile string, lines int, extra ...string) (string, error) {
	args := append([]string{"tool", "pprof", "-top", "-nodecount=" + strconv.Itoa(lines)}, extra...)
	args = append(args, bin, profile)
	out, err := exec.CommandContext(ctx, "go", args...).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof %s: %w", profile, err)
	}
	return strings.TrimSpace(string(out)), nil
}
