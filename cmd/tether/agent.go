package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/device/shell"
	"github.com/tether-io/tether/internal/cliflag"
	"github.com/tether-io/tether/sas"
)

const agentUsage = `usage: tether agent --device-file FILE --allow NAME=HOST:PORT [--allow ...]
       tether agent --config FILE

Runs on a device: keeps it connected to the hub and connects each stream
named in an --allow to that HOST:PORT. Streams with any other name are
rejected. Stops on SIGINT or SIGTERM.

--allow NAME=@shell serves a shell on a pseudo-terminal as stream NAME
(tether shell DEVICE NAME, or Terminal in the web console): the login
shell of the agent's user, or --shell; as root, --shell-user runs it as
another user. A session ends after --shell-idle without input or output
and after --shell-max in all (0: no limit).

The device's connection string, which holds its key, comes in a file only
its owner may read (--device-file, as tether devices add --out writes it)
or in TETHER_DEVICE; --device shows it to every local user in ps.

Settings come from flags, then environment variables, then the --config
file (TOML: device, device_file, ca, cert, key, allow, transport, mqtt_addr,
hubs, keepalive, log_format, log_level, shell, shell_user, shell_idle,
shell_max), then the defaults. See
deploy/agent.toml.
--hubs HOST:PORT,... (hubs in the file) lists hub nodes to connect to
instead of the connection string's HostName, in random order; see
docs/cluster.md.

A device registered with a certificate (tether devices add ID
--x509-thumbprint HEX, or --x509-ca) takes the connection string
"HostName=...;DeviceId=ID;x509=true" and --cert FILE --key FILE: its
certificate, whose subject CN is ID, and that certificate's key.

A hub that offers sessions carries the device's streams on one connection
while it has any; --no-sessions (or TETHER_SESSIONS=0) keeps every stream
on a connection of its own, as with a hub without sessions.
`

// targetDialTimeout bounds dialing a local target; the service is waiting
// for the device's answer meanwhile.
const targetDialTimeout = 10 * time.Second

// allowList maps a stream name to the host:port it connects to.
type allowList map[string]string

func (a allowList) String() string { return strings.Join(a.entries(), ",") }

// entries are a's NAME=HOST:PORT strings by name, each as Set takes it, so
// that --allow is laid over the other sources as the list they give.
func (a allowList) entries() []string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(a)) {
		parts = append(parts, name+"="+a[name])
	}
	return parts
}

func (a allowList) Set(v string) error {
	name, target, ok := strings.Cut(v, "=")
	if !ok || name == "" || target == "" {
		return fmt.Errorf("%q is not NAME=HOST:PORT or NAME=%s", v, shellTarget)
	}
	if strings.ContainsAny(name, "/?#+&= ") {
		return fmt.Errorf("stream name %q may not hold / ? # + & = or spaces", name)
	}
	host, port, err := net.SplitHostPort(target)
	if strings.HasPrefix(target, "@") && target != shellTarget {
		return fmt.Errorf("target %q of %q: the agent's only built-in handler is %s", target, name, shellTarget)
	}
	if target != shellTarget && (err != nil || host == "" || port == "") {
		return fmt.Errorf("target %q of %q is not HOST:PORT or %s", target, name, shellTarget)
	}
	if old, dup := a[name]; dup {
		return fmt.Errorf("stream %q is allowed twice (%s and %s)", name, old, target)
	}
	a[name] = target
	return nil
}

func cmdAgent(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("agent", agentUsage)
	// The agent's CA falls back to its own --config file, never to tether
	// login's, which is for reaching the hub as a service.
	cliflag.Fallback(fs, "ca", "ca in the --config file")
	cliflag.Fallback(fs, "hub", "")
	fl := addAgentFlags(fs)
	noSessions := sessionsFlag(fs)
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("agent takes no arguments, got %q: streams are given with --allow NAME=HOST:PORT", pos[0])
	}
	fl.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { fl.set[f.Name] = true })
	cfg, err := resolveAgentConfig(fl, g.CA, os.Getenv)
	if err != nil {
		return err
	}

	sessions, err := sessionsOn(*noSessions, os.Getenv("TETHER_SESSIONS"))
	if err != nil {
		return err
	}
	opts := device.Options{MQTTAddress: cfg.MQTTAddr, KeepAlive: cfg.KeepAlive, Hubs: cfg.Hubs, NoSessions: !sessions}
	if cfg.Transport == "tls" {
		opts.Transport = device.TLS
	}
	log, err := newLogger(g.Stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	opts.Logger = log

	if strings.TrimSpace(cfg.Device) == "" {
		return errors.New("no device given: pass --device-file FILE (as tether devices add --out writes it), set TETHER_DEVICE or TETHER_DEVICE_FILE, or put device_file = \"...\" in the --config file: the device's connection string (HostName=...;DeviceId=...;SharedAccessKey=...)")
	}
	if len(cfg.Allow) == 0 {
		return errors.New("nothing to expose: pass at least one --allow NAME=HOST:PORT (e.g. --allow ssh=127.0.0.1:22), set TETHER_ALLOW or an allow table in the --config file")
	}
	if cfg.DeviceFrom == "--device" && holdsKey(cfg.Device) {
		log.Warn("--device shows the device's key to every local user (ps, /proc): give it in a file only you can read (--device-file FILE, mode 0600) or in TETHER_DEVICE")
	}
	if cfg.FileExposed {
		log.Warn("the config file holds the device key and others may read it: chmod 600 it, or give the key in TETHER_DEVICE", "file", cfg.File)
	}
	shellSrv, err := newAgentShell(cfg, log)
	if err != nil {
		return err
	}
	g.CA = cfg.CA
	conf, err := g.tlsConfig()
	if err != nil {
		return err
	}
	opts.TLSConfig = conf
	if cfg.Cert != "" {
		if opts.Certificate, err = loadAgentCert(cfg); err != nil {
			return err
		}
	}

	// A hub that is down, or a network not up yet, is waited for as the
	// running agent would: systemd then needs no restart loop, and a boot
	// that brings the network up late costs nothing. Refusals still end
	// the agent at once, with the reason.
	opts.WaitForHub = true
	c, err := device.Dial(ctx, cfg.Device, opts)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while connecting: not a failure
		}
		return explainAgentDial(err, cfg)
	}
	log.Info("agent running", "allow", cfg.Allow.String(), "transport", cfg.Transport, "keepalive", cfg.KeepAlive.String())
	if cfg.CA == "" {
		// Verifying the hub against the system roots parsed all of them,
		// leaving about 1.5 MiB of garbage that no GC collects while the
		// heap stays under the runtime's 4 MiB minimum goal: an idle agent
		// would hold it for months. Collect it and hand the pages back once
		// (0.4 MiB less RSS). With --ca the garbage is too small to pay
		// for the GC's own metadata (0.3 MiB more), so it is left alone.
		debug.FreeOSMemory()
	}
	a := &agent{client: c, allow: cfg.Allow, log: log, shell: shellSrv}
	a.run(ctx)
	log.Info("agent stopped")
	return nil
}

// sessionsOn says whether the agent takes streams on a session: not with
// --no-sessions, nor with TETHER_SESSIONS set to 0 (or false, off).
func sessionsOn(noSessions bool, env string) (bool, error) {
	if noSessions {
		return false, nil
	}
	switch strings.ToLower(strings.TrimSpace(env)) {
	case "", "1", "true", "on":
		return true, nil
	case "0", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("TETHER_SESSIONS=%q: want 0 (streams on connections of their own) or 1", env)
}

// holdsKey says whether the connection string cs has a key in it (a
// certificate device's has none).
func holdsKey(cs string) bool {
	c, err := sas.ParseConnectionString(cs)
	return err == nil && c.SharedAccessKey != ""
}

// agent answers stream requests and relays accepted streams.
type agent struct {
	client *device.Client
	allow  allowList
	log    *slog.Logger
	shell  *shell.Server // nil unless --allow names shellTarget
	wg     sync.WaitGroup
}

// run serves requests until ctx is done, then ends every stream, waits for
// them and disconnects.
func (a *agent) run(ctx context.Context) {
	defer a.client.Close()
	defer a.wg.Wait()
	for {
		req, err := a.client.Accept(ctx)
		if err != nil {
			return // ctx done
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.handle(ctx, req)
		}()
	}
}

func (a *agent) handle(ctx context.Context, req *device.Request) {
	// The hub's id of the stream, from its streaming URL: the streamId of
	// the hub's stream-log record and of tether streams, so that a
	// stream's lines here and the hub's can be put side by side.
	id := req.StreamID
	if id == "" {
		id = "?"
	}
	log := a.log.With("stream", req.Name, "streamId", id, "rid", req.RID)
	target, ok := a.allow[req.Name]
	if !ok {
		log.Warn("rejecting stream: its name is not in --allow")
		a.answered(log, req.Reject())
		return
	}
	if target == shellTarget {
		a.serveShell(ctx, req, log)
		return
	}
	// The target first: a service should hear "rejected" at once, and why,
	// not find its stream closed on arrival.
	dctx, cancel := context.WithTimeout(ctx, targetDialTimeout)
	d := net.Dialer{KeepAlive: keepAliveFor(target)}
	tc, err := d.DialContext(dctx, "tcp", target)
	cancel()
	if err != nil {
		log.Warn("rejecting stream: cannot connect to its target", "target", target, "err", err)
		a.answered(log, req.RejectUnreachable(err))
		return
	}
	sc, err := req.Accept(ctx)
	if err != nil {
		tc.Close()
		log.Warn("stream failed", "target", target, "err", err)
		return
	}
	log.Info("stream open", "target", target)
	start := time.Now()
	// Shutdown aborts streams in flight (relay watches ctx); relay then
	// returns.
	err = relay(ctx, tc, sc, "target → service", "service → target")
	sc.Close()
	tc.Close()
	if err != nil && ctx.Err() == nil {
		log.Warn("stream closed", "target", target, "duration", time.Since(start).Round(time.Millisecond), "err", err)
		return
	}
	log.Info("stream closed", "target", target, "duration", time.Since(start).Round(time.Millisecond))
}

// answered logs a rejection that did not reach the hub.
func (a *agent) answered(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("rejecting stream", "err", err)
	}
}
