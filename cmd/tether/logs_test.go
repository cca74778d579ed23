package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

// TestParseSince: --since takes days, durations, both together and RFC
// 3339 times, and says what it wants otherwise.
func TestParseSince(t *testing.T) {
	now := time.Date(2025, 6, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"1d":                          now.Add(-24 * time.Hour),
		"2d":                          now.Add(-48 * time.Hour),
		"1d12h":                       now.Add(-36 * time.Hour),
		"0d30m":                       now.Add(-30 * time.Minute),
		"90m":                         now.Add(-90 * time.Minute),
		"1.5h":                        now.Add(-90 * time.Minute),
		"0":                           now,
		"2025-06-01T08:00:00Z":        time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC),
		"2025-06-01T08:00:00.5+02:00": time.Date(2025, 6, 1, 6, 0, 0, 500_000_000, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "1x", "-1h", "1d-1h", "1d+1h", "yesterday", "2025-06-01", "1 d", "99999999999d"} {
		if got, err := parseSince(in, now); err == nil || !strings.Contains(err.Error(), "RFC 3339") {
			t.Errorf("parseSince(%q) = %v, %v; want an error saying what --since takes", in, got, err)
		}
	}
}

// TestLogsQuery: the last hour unless --since or -n says otherwise; -n
// with --since is the last N of that window.
func TestLogsQuery(t *testing.T) {
	now := time.Date(2025, 6, 10, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		since      string
		last       int
		wantSince  time.Time
		wantLast   int
		wantErrHas string
	}{
		{"", 0, now.Add(-time.Hour), 0, ""},
		{"", 20, time.Time{}, 20, ""},
		{"2d", 0, now.Add(-48 * time.Hour), 0, ""},
		{"2d", 5, now.Add(-48 * time.Hour), 5, ""},
		{"", -1, time.Time{}, 0, "-n -1"},
		{"", maxLogLast + 1, time.Time{}, 0, "from 1 to"},
		{"soon", 0, time.Time{}, 0, "--since"},
	} {
		q, err := logsQuery("dev1", tc.since, tc.last, true, now)
		if tc.wantErrHas != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrHas) {
				t.Errorf("--since %q -n %d: %v, want an error with %q", tc.since, tc.last, err, tc.wantErrHas)
			}
			continue
		}
		if err != nil || !q.Since.Equal(tc.wantSince) || q.Last != tc.wantLast || q.DeviceID != "dev1" || !q.Follow || q.After != 0 {
			t.Errorf("--since %q -n %d: %+v, %v; want since %v, last %d", tc.since, tc.last, q, err, tc.wantSince, tc.wantLast)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		1258291: "1.2 MiB", 1048575: "1.0 MiB", 5 << 30: "5.0 GiB", 3 << 40: "3.0 TiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestLogPrinter: a header row, then one row a record under it, columns
// as wide as their widest cell; JSON lines in the hub's shape, without
// the sequence the hub numbers them with.
func TestLogPrinter(t *testing.T) {
	start := time.Date(2025, 6, 10, 12, 0, 0, 0, time.UTC)
	mk := func(p wire.StreamLogProperties, durMs int64, desc string) wire.StreamLog {
		b, _ := json.Marshal(p)
		return wire.StreamLog{Time: start, DurationMs: durMs, ResultDescription: desc, Properties: string(b), Sequence: 7}
	}
	recs := []wire.StreamLog{
		mk(wire.StreamLogProperties{DeviceID: "dev1", RequestName: "ssh", Result: wire.ResultAccepted, Policy: "iothubowner",
			SetupMs: 12, LifetimeMs: 75_000, BytesToDevice: 1258291, BytesToService: 900, StreamID: "ABC",
			ServiceAddress: "192.0.2.7:50123", ClosedBy: "hub", CloseReason: "killed by policy ops"}, 75_012, "stream accepted by the device"),
		mk(wire.StreamLogProperties{DeviceID: "a-much-longer-device", ModuleID: "m", RequestName: "web", Result: wire.ResultOffline,
			Policy: "service", StreamID: "DEF"}, 3, "device not online"),
		mk(wire.StreamLogProperties{DeviceID: "dev1", RequestName: "shell", Result: wire.ResultAccepted, Policy: "iothubowner",
			StreamID: "GHI", Recorded: true, ClosedBy: "device"}, 5_000, "stream accepted by the device"),
	}
	var b strings.Builder
	p := &logPrinter{w: &b}
	for _, r := range recs {
		p.fit(r)
	}
	if err := p.header(); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := p.print(r); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ENDED") {
		t.Fatalf("want a header and three rows:\n%s", b.String())
	}
	// A recorded terminal session says so where its ID is, for --replay.
	if !strings.Contains(lines[3], "GHI (recorded)") || strings.Contains(lines[1], "recorded") {
		t.Errorf("recorded row: %s; row without a recording: %s", lines[3], lines[1])
	}
	ended := start.Add(75_012 * time.Millisecond).Local().Format(time.DateTime)
	fields := strings.Fields(lines[1])
	want := []string{ended[:10], ended[11:], "dev1", "ssh", "accepted", "12ms", "1m15s", "1.2", "MiB", "900", "B", "iothubowner", "192.0.2.7:50123", "ABC", "hub", "(killed", "by", "policy", "ops)"}
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Errorf("row:\n%s\nwant the fields %q", lines[1], want)
	}
	if !strings.Contains(lines[2], "a-much-longer-device/m") || !strings.Contains(lines[2], "device not online") {
		t.Errorf("failed row: %s", lines[2])
	}
	// Aligned: every column starts where its heading does.
	for _, col := range []string{"DEVICE", "RESULT", "SERVICE", "STREAM-ID"} {
		at := strings.Index(lines[0], "  "+col+" ") + 2
		for _, l := range lines[1:] {
			if at <= 0 || l[at-1] != ' ' || l[at] == ' ' {
				t.Errorf("column %s (at %d) not aligned in:\n%s", col, at, b.String())
			}
		}
	}

	b.Reset()
	p = &logPrinter{w: &b, json: true}
	if err := p.header(); err != nil {
		t.Fatal(err)
	}
	if err := p.print(recs[0]); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal([]byte(b.String()), &back); err != nil || strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("JSON line %q: %v", b.String(), err)
	}
	if _, ok := back["sequence"]; ok || back["properties"] != recs[0].Properties {
		t.Errorf("JSON line not in the hub's shape: %s", b.String())
	}
}
