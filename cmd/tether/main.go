// Command tether is Tether's client: it manages the device registry, runs
// the agent on a device and forwards local TCP ports through device streams.
// It links only the SDKs, never hub code, so the agent stays small.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: tether [--hub CONNSTR] [--ca FILE] COMMAND [ARGS]

Commands:
  devices add ID          register a device; prints its connection string
  devices list [--json]   list devices: id, status, connection state
  devices show ID         show one device as JSON
  devices rm ID           delete a device
  devices disable ID      refuse the device: it is disconnected, its streams end
  devices enable ID       let a disabled device connect again
  devices rotate-key ID [--secondary]
                          give the device a new primary (or secondary) key
  devices add ID --x509-thumbprint HEX | --x509-ca
                          register a device that authenticates with a certificate
  certificates add NAME FILE.pem | list | show NAME | rm NAME
                          CA certificates that vouch for --x509-ca devices
  agent                   run on a device: --device CONNSTR --allow NAME=HOST:PORT,
                          or --config FILE (TOML); see tether agent -h
  forward DEVICE STREAM   relay each connection on --listen ADDR through a stream
  pipe DEVICE STREAM      join one stream to stdin/stdout (ssh ProxyCommand)
  endpoints               show the hub's streaming endpoints
  streams [--device ID] [--json]
                          streams open now, on every hub node
  logs [--device ID] [--since DURATION] [--follow] [--json]
                          stream logs: one record per stream request

Global flags (also accepted after the command):
  --hub CONNSTR   service connection string (env TETHER_HUB)
  --ca FILE       PEM file of CAs to trust for the hub (env TETHER_CA);
                  the system roots otherwise
`

// globals are the flags every command accepts, before or after its name.
type globals struct {
	Hub    string
	CA     string
	Stdout io.Writer
	Stderr io.Writer
}

// addFlags registers the global flags on fs, defaulting to what is already
// set (the environment, or flags given before the command).
func (g *globals) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&g.Hub, "hub", g.Hub, "service connection string (env TETHER_HUB)")
	fs.StringVar(&g.CA, "ca", g.CA, "PEM file of CAs to trust (env TETHER_CA)")
}

// tlsConfig trusts the CA file when one is given, the system roots otherwise.
func (g *globals) tlsConfig() (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if g.CA == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(g.CA)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", g.CA)
	}
	conf.RootCAs = pool
	return conf, nil
}

// newFlagSet returns a flag set for a command that reports errors instead
// of exiting, with the global flags on it.
func (g *globals) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(g.Stderr)
	g.addFlags(fs)
	return fs
}

// errUsage marks an error already explained by the flag package.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "tether:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	g := &globals{Hub: os.Getenv("TETHER_HUB"), CA: os.Getenv("TETHER_CA"), Stdout: stdout, Stderr: stderr}
	fs := flag.NewFlagSet("tether", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	g.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	err := dispatch(ctx, g, cmd, rest)
	if errors.Is(err, flag.ErrHelp) {
		return nil // the command printed its help: no failure
	}
	return err
}

func dispatch(ctx context.Context, g *globals, cmd string, rest []string) error {
	switch cmd {
	case "devices":
		return cmdDevices(ctx, g, rest)
	case "certificates":
		return cmdCertificates(ctx, g, rest)
	case "agent":
		return cmdAgent(ctx, g, rest)
	case "forward":
		return cmdForward(ctx, g, rest)
	case "pipe":
		return cmdPipe(ctx, g, rest)
	case "streams":
		return cmdStreams(ctx, g, rest)
	case "logs":
		return cmdLogs(ctx, g, rest)
	case "endpoints":
		return cmdEndpoints(ctx, g, rest)
	case "help":
		fmt.Fprint(g.Stdout, usage)
		return nil
	default:
		fmt.Fprintf(g.Stderr, "tether: unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}
