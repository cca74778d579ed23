package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/device/shell"
)

// shellTarget, in place of an --allow's HOST:PORT, serves a shell on a
// pseudo-terminal as that stream (device/shell) rather than connecting to
// a local port.
const shellTarget = "@shell"

// Defaults of the shell's time limits: a forgotten terminal ends after
// half an hour of silence, and no session outlives a working day.
const (
	defaultShellIdle = "30m"
	defaultShellMax  = "12h"
)

// shellConfig is what the agent's shells run with.
type shellConfig struct {
	Shell, User string
	Idle, Max   time.Duration
}

// addShellFlags registers the flags of the streams allowed as @shell.
func addShellFlags(fs *flag.FlagSet) {
	fs.String("shell", "", "`PATH` of the shell of --allow NAME="+shellTarget+" streams; the login shell of the user it runs as (/etc/passwd), else /bin/sh")
	fs.String("shell-user", "", "`NAME` (or uid) of the user "+shellTarget+" shells run as, with its groups and home; the agent must run as root. Default: the agent's own user")
	fs.String("shell-idle", defaultShellIdle, "end a shell session after this long without input or output (`DURATION`, 0: never)")
	fs.String("shell-max", defaultShellMax, "end a shell session this long after it started (`DURATION`, 0: never)")
}

// resolveShell checks the shell's settings. Those given by a source
// other than the defaults are a mistake when no stream is allowed as
// @shell: they would do nothing.
func resolveShell(raw *agentSettings, allow allowList) (shellConfig, error) {
	c := shellConfig{Shell: raw.Shell.value, User: raw.ShellUser.value}
	for _, d := range []struct {
		s   setting
		out *time.Duration
	}{{raw.ShellIdle, &c.Idle}, {raw.ShellMax, &c.Max}} {
		if d.s.value == "" {
			continue
		}
		v, err := time.ParseDuration(d.s.value)
		if d.s.value == "0" {
			v, err = 0, nil
		}
		if err != nil || v < 0 {
			return c, fmt.Errorf("%s %q: want a duration such as 30m, or 0 for no limit", d.s.from, d.s.value)
		}
		*d.out = v
	}
	if allowsShell(allow) {
		return c, nil
	}
	for _, s := range []setting{raw.Shell, raw.ShellUser, raw.ShellIdle, raw.ShellMax} {
		if s.from != "" && s.from != "default" {
			return c, fmt.Errorf("%s is for streams served by the agent's shell, and no --allow names %s (e.g. --allow shell=%s)", s.from, shellTarget, shellTarget)
		}
	}
	return c, nil
}

// allowsShell says whether an --allow names shellTarget.
func allowsShell(allow allowList) bool {
	for _, target := range allow {
		if target == shellTarget {
			return true
		}
	}
	return false
}

// newAgentShell is the shell server of the agent's @shell streams, nil
// when it has none; its mistakes (a user that does not exist, a shell that
// is not there, --shell-user without root) stop the agent at its start.
func newAgentShell(cfg *agentConfig, log *slog.Logger) (*shell.Server, error) {
	if !allowsShell(cfg.Allow) {
		return nil, nil
	}
	c := cfg.Shell
	srv, err := shell.New(shell.Options{Shell: c.Shell, User: c.User, Idle: c.Idle, Max: c.Max, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--allow NAME=%s: %w", shellTarget, err)
	}
	return srv, nil
}

// serveShell accepts req and runs a shell session on it.
func (a *agent) serveShell(ctx context.Context, req *device.Request, log *slog.Logger) {
	sc, err := req.Accept(ctx)
	if err != nil {
		log.Warn("stream failed", "target", shellTarget, "err", err)
		return
	}
	log.Info("stream open", "target", shellTarget, "shell", a.shell.Shell(), "user", a.shell.User())
	start := time.Now()
	res := a.shell.Serve(ctx, sc)
	attrs := []any{"target", shellTarget, "duration", time.Since(start).Round(time.Millisecond),
		"status", res.Status, "in", res.In, "out", res.Out}
	if res.Why != "" {
		attrs = append(attrs, "why", res.Why)
	}
	switch {
	case !res.Started:
		log.Warn("stream closed: no shell started", append(attrs, "err", res.Err)...)
	case res.Err != nil && ctx.Err() == nil:
		log.Warn("stream closed", append(attrs, "err", res.Err)...)
	default:
		log.Info("stream closed", attrs...)
	}
}
