package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

const logsUsage = `usage: tether logs [--device ID] [--since DURATION] [--follow] [--json]

Prints the hub's stream logs, one record per stream request, newest last.
`

// cmdLogs prints the hub's stream logs: one line a stream invocation,
// newest last; --follow keeps printing new ones.
func cmdLogs(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("logs", logsUsage)
	device := fs.String("device", "", "only this device's streams")
	since := fs.Duration("since", 0, "only records of the last DURATION (e.g. 15m, 24h)")
	follow := fs.Bool("follow", false, "keep printing new records as they come")
	asJSON := fs.Bool("json", false, "print each record as a JSON line, in the hub's shape")
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("logs takes no arguments (got %q); use --device ID", pos)
	}
	if *since < 0 {
		return errors.New("--since must be positive")
	}
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()
	q := service.LogQuery{DeviceID: *device, Follow: *follow}
	if *since > 0 {
		q.Since = time.Now().Add(-*since)
	}
	enc := json.NewEncoder(g.Stdout)
	err = c.StreamLogs(ctx, q, func(rec wire.StreamLog) error {
		if *asJSON {
			return enc.Encode(rec)
		}
		_, err := fmt.Fprintln(g.Stdout, formatLog(rec))
		return err
	})
	if err != nil {
		return explainHubError(err, c, *device)
	}
	return nil
}

// formatLog is one human line: when, which stream, what came of it.
func formatLog(rec wire.StreamLog) string {
	p, err := rec.Props()
	if err != nil {
		return rec.Time.Format(time.RFC3339) + "  " + rec.ResultDescription
	}
	dev := p.DeviceID
	if p.ModuleID != "" {
		dev += "/" + p.ModuleID
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s  %s  %s  setup=%dms", rec.Time.Local().Format("2006-01-02 15:04:05.000"), dev, p.RequestName, p.Result, p.SetupMs)
	if p.Result == wire.ResultAccepted {
		fmt.Fprintf(&b, "  lifetime=%s  to-device=%dB  to-service=%dB", (time.Duration(p.LifetimeMs) * time.Millisecond).String(), p.BytesToDevice, p.BytesToService)
	}
	if p.ClosedBy != "" {
		fmt.Fprintf(&b, "  closed-by=%s", p.ClosedBy)
	}
	if p.CloseReason != "" {
		fmt.Fprintf(&b, " (%s)", p.CloseReason)
	}
	if p.Policy != "" {
		fmt.Fprintf(&b, "  policy=%s", p.Policy)
	}
	return b.String()
}
