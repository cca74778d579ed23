package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/tether-io/tether/internal/retry"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

const logsUsage = `usage: tether logs [--device ID] [--since DURATION|TIME] [-n N] [--follow] [--json]
       tether logs --replay STREAM-ID

Prints the hub's stream logs: one record per stream request, written when
the stream ends, newest last. Without --since or -n, the last hour's.

--since takes a duration back from now (90m, 36h, 2d, 1d12h) or an RFC 3339
time (2025-06-01T08:00:00Z). -n N prints the last N records (of the --since
window, when there is one). --follow then prints new records as they come;
it rides out a hub restart, and resumes after the last record it printed:
none is missed, none printed twice.

The table's ENDED is when the stream ended, in local time, and SERVICE the
address its request came from. --json prints each record as a JSON line in
the hub's shape (Azure's DeviceStreams resource logs), whose time is when
the stream was asked for.

--replay plays a terminal session (a device's @shell) as the hub node
that relayed it recorded it, when that node runs with --record-terminals:
its record's STREAM-ID says (recorded) (--json: "recorded": true).
`

// defaultLogWindow is what logs shows when told neither --since nor -n:
// enough to see what just happened, not a week of records.
const defaultLogWindow = time.Hour

// maxLogLast is the hub's bound on -n.
const maxLogLast = 100_000

// cmdLogs prints the hub's stream logs: one row a stream invocation,
// newest last; --follow keeps printing new ones.
func cmdLogs(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("logs", logsUsage)
	device := fs.String("device", "", "only this device's streams")
	since := fs.String("since", "", "only records since `WHEN`: a duration back from now (15m, 36h, 2d) or an RFC 3339 time; default the last hour unless -n is given")
	last := fs.Int("n", 0, "only the last `N` records")
	follow := fs.Bool("follow", false, "keep printing new records as they come, across hub restarts")
	asJSON := fs.Bool("json", false, "print each record as a JSON line, in the hub's shape")
	replay := fs.String("replay", "", replayFlagUsage)
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if *replay != "" {
		if *device != "" || *since != "" || *last != 0 || *follow || *asJSON || len(pos) != 0 {
			return errors.New("--replay plays one recording and takes no other flag or argument")
		}
		c, err := newServiceClient(g)
		if err != nil {
			return err
		}
		defer c.Close()
		return replayRecording(ctx, c, *replay, g.Stdout)
	}
	if len(pos) != 0 {
		return fmt.Errorf("logs takes no arguments (got %q); use --device ID", pos)
	}
	q, err := logsQuery(*device, *since, *last, *follow, time.Now())
	if err != nil {
		return err
	}
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()

	out := &logPrinter{w: g.Stdout, json: *asJSON}
	if !*follow {
		// All of them first, so that the columns fit every row.
		var recs []wire.StreamLog
		err := c.StreamLogs(ctx, q, func(rec wire.StreamLog) error {
			recs = append(recs, rec)
			return nil
		})
		if err != nil {
			return explainHubError(err, c, *device)
		}
		for _, rec := range recs {
			out.fit(rec)
		}
		if err := out.header(); err != nil {
			return err
		}
		for _, rec := range recs {
			if err := out.print(rec); err != nil {
				return err
			}
		}
		if len(recs) == 0 && !*asJSON && q.Last == 0 {
			fmt.Fprintf(g.Stderr, "no stream-log records since %s (--since and -n reach further back)\n", q.Since.Local().Format(time.DateTime))
		}
		return nil
	}
	if err := out.header(); err != nil {
		return err
	}
	return followLogs(ctx, c, q, out, newPlainLogger(g.Stderr, slog.LevelInfo), *device)
}

// logsQuery is the query of logs' flags: --since's window, or the last
// -n records (of that window, if both), or else the last hour's.
func logsQuery(device, since string, last int, follow bool, now time.Time) (service.LogQuery, error) {
	q := service.LogQuery{DeviceID: device, Last: last, Follow: follow}
	var err error
	switch {
	case last < 0 || last > maxLogLast:
		return q, fmt.Errorf("-n %d: want a number of records from 1 to %d", last, maxLogLast)
	case since != "":
		q.Since, err = parseSince(since, now)
	case last == 0:
		q.Since = now.Add(-defaultLogWindow)
	}
	return q, err
}

// followLogs prints the records q selects, then new ones until ctx ends.
// A lost hub (restarted, draining, the network down) is tried again with
// the agent's delays, and the logs are resumed after the last record
// printed: the hub numbers its records, so none is missed or printed
// twice. Refusals (a wrong key, an untrusted certificate) end it.
func followLogs(ctx context.Context, c *service.Client, q service.LogQuery, out *logPrinter, log *slog.Logger, device string) error {
	rep := retry.Reporter{Every: waitLogEvery}
	attempt := 0
	for {
		started := time.Now()
		err := c.StreamLogs(ctx, q, func(rec wire.StreamLog) error {
			if rec.Sequence != 0 {
				// Resuming: after this one, whatever window the first
				// call had.
				q.After, q.Last, q.Since = rec.Sequence, 0, time.Time{}
			}
			attempt = 0
			return out.print(rec)
		})
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			return nil // only with ctx, but never loop on it
		case !errors.Is(err, service.ErrLogsInterrupted) && !hubUnavailable(err):
			return explainHubError(err, c, device)
		}
		if time.Since(started) > waitLogEvery {
			attempt = 0 // it was following: this is a new outage
		}
		d := retry.Delay(attempt, waitMinDelay, waitMaxDelay, rand.Int64N)
		attempt++
		rep.Log(log, "lost the hub; following again", explainHubError(err, c, device), "retry_in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// parseSince reads --since: a duration back from now, which may begin
// with days (time.ParseDuration knows none), or an RFC 3339 time.
func parseSince(v string, now time.Time) (time.Time, error) {
	bad := fmt.Errorf("--since %q: want a duration back from now (15m, 36h, 2d, 1d12h) or an RFC 3339 time (2025-06-01T08:00:00Z)", v)
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if v == "" {
		return time.Time{}, bad
	}
	var d time.Duration
	rest := v
	// Days in front (2d, 1d12h): digits, then d. Parsed by hand rather
	// than with regexp, which would add to the agent's binary and memory.
	if i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' }); i > 0 && v[i] == 'd' {
		days, err := strconv.Atoi(v[:i])
		if err != nil || days > 100*365 {
			return time.Time{}, bad
		}
		d, rest = time.Duration(days)*24*time.Hour, v[i+1:]
	}
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil || strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
			return time.Time{}, bad
		}
		d += r
	}
	if d < 0 {
		return time.Time{}, bad
	}
	return now.Add(-d), nil
}

// logPrinter prints records as table rows under a header, or as JSON
// lines. Its columns are as wide as the widest cell it has seen: fit them
// all first, or, following, let later rows push the columns out.
type logPrinter struct {
	w     io.Writer
	json  bool
	width [len(logColumns)]int
}

// logColumns are the table's headings; the last column is not padded.
var logColumns = [...]string{"ENDED", "DEVICE", "STREAM", "RESULT", "SETUP", "LIFETIME", "TO-DEVICE", "TO-SERVICE", "POLICY", "SERVICE", "STREAM-ID", "CLOSED"}

// fit widens the columns to rec's cells.
func (p *logPrinter) fit(rec wire.StreamLog) {
	for i, c := range logRow(rec) {
		p.width[i] = max(p.width[i], len(c))
	}
}

func (p *logPrinter) header() error {
	if p.json {
		return nil
	}
	return p.line(logColumns[:])
}

func (p *logPrinter) print(rec wire.StreamLog) error {
	if p.json {
		// The hub's shape, as stored: the sequence is how the hub
		// numbers what it sends, not part of the record.
		rec.Sequence = 0
		return json.NewEncoder(p.w).Encode(rec)
	}
	return p.line(logRow(rec))
}

func (p *logPrinter) line(cells []string) error {
	var b strings.Builder
	for i, c := range cells {
		if i == len(cells)-1 {
			b.WriteString(c)
			break
		}
		p.width[i] = max(p.width[i], len(c))
		b.WriteString(c)
		b.WriteString(strings.Repeat(" ", p.width[i]-len(c)+2))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(p.w, b.String())
	return err
}

// logRow is rec's cells, under logColumns.
func logRow(rec wire.StreamLog) []string {
	ended := rec.Time.Add(time.Duration(rec.DurationMs) * time.Millisecond).Local().Format(time.DateTime)
	p, err := rec.Props()
	if err != nil {
		return []string{ended, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", rec.ResultDescription}
	}
	dev := p.DeviceID
	if p.ModuleID != "" {
		dev += "/" + p.ModuleID
	}
	lifetime, toDev, toSvc := "-", "-", "-"
	if p.Result == wire.ResultAccepted {
		lifetime = humanDuration(time.Duration(p.LifetimeMs) * time.Millisecond)
		toDev, toSvc = humanBytes(p.BytesToDevice), humanBytes(p.BytesToService)
	}
	closed := p.ClosedBy
	if p.CloseReason != "" {
		closed += " (" + p.CloseReason + ")"
	}
	if closed == "" && p.Result != wire.ResultAccepted {
		closed = rec.ResultDescription
	}
	id := orDash(p.StreamID)
	if p.Recorded {
		id += " (recorded)" // --replay plays it
	}
	return []string{ended, orDash(dev), orDash(p.RequestName), orDash(p.Result),
		humanDuration(time.Duration(p.SetupMs) * time.Millisecond), lifetime, toDev, toSvc,
		orDash(p.Policy), orDash(p.ServiceAddress), id, orDash(closed)}
}

// humanBytes is n in bytes or binary units, one decimal: 512 B, 1.2 MiB.
func humanBytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, unit := float64(n)/1024, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB", "PiB"} {
		if v < 1023.95 { // what rounds to 1024.0 is 1.0 of the next
			break
		}
		v, unit = v/1024, u
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + unit
}

// humanDuration is d to the millisecond under a second, to a tenth of a
// second under a minute, to the second above.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
