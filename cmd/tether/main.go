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
	"slices"
	"syscall"

	"github.com/tether-io/tether/internal/cliflag"
)

const usageHead = `usage: tether [--hub CONNSTR] [--ca FILE] COMMAND [ARGS]

tether is Tether's client: it manages the hub's device registry, runs the
agent on a device and forwards local TCP ports to devices through streams.

Commands:
  devices add ID [--out FILE]
                          register a device; prints its connection string, or
                          writes it to FILE (mode 0600)
  devices list [--json]   list devices: id, status, connection state
  devices show ID [--show-keys]
                          show one device as JSON, its keys only if asked
  devices rm ID           delete a device
  devices disable ID      refuse the device: it is disconnected, its streams end
  devices enable ID       let a disabled device connect again
  devices rotate-key ID [--secondary]
                          give the device a new primary (or secondary) key
  devices add ID --x509-thumbprint HEX | --x509-ca
                          register a device that authenticates with a certificate
  certificates add NAME FILE.pem | list | show NAME | rm NAME
                          CA certificates that vouch for --x509-ca devices
  policies list | show NAME | rm NAME | rotate-key NAME [--secondary]
                          access policies; show prints one's connection string
  policies add NAME --rights RIGHT,...
                          add a policy with the least rights a program needs
  agent                   run on a device: --device-file FILE
                          --allow NAME=HOST:PORT, or --config FILE (TOML);
                          see tether agent -h
  forward DEVICE STREAM   relay each connection on --listen ADDR through a stream
  pipe DEVICE STREAM      join one stream to stdin/stdout (ssh ProxyCommand)
  shell DEVICE [STREAM]   a shell on the device in this terminal (the agent's
                          --allow shell=@shell)
  endpoints               show the hub's streaming endpoints
  streams [list] [--device ID] [--json]
                          streams open now, on every hub node
  streams kill ID         end an open stream, on whichever node holds it
  logs [--device ID] [--since DURATION|TIME] [-n N] [--follow] [--json]
                          stream logs: one record per stream request, the
                          last hour's unless --since or -n says otherwise
  console [--ttl DURATION] [--no-open]
                          print (and on a desktop open) a link that signs in
                          to the hub's web console for an hour
  completion bash|zsh|fish
                          print a shell completion script
  login CONNSTR|- [--ca FILE]
                          keep the hub's connection string in a config file
                          (mode 0600): no --hub or TETHER_HUB needed after it
  logout                  remove the config file
  version                 print this tether's version
  help [COMMAND]          this help, or a command's

Global flags, also accepted after the command:
`

// command is one of tether's commands, as run dispatches and completion
// describes it.
type command struct {
	name string
	// subs are the subcommands of a group (devices add, devices list,
	// ...); run gets the subcommand as its first argument.
	subs []string
	// words are the choices of the first argument, for completion.
	words []string
	run   func(ctx context.Context, g *globals, args []string) error
}

// commands is every command: run finds a command here, help and
// completion list them from here, and the tests walk it, so that no
// command escapes any of them. Filled in init: cmdCompletion reads it.
var commands []command

func init() {
	commands = []command{
		{name: "devices", subs: []string{"add", "list", "show", "rm", "disable", "enable", "rotate-key"}, run: cmdDevices},
		{name: "certificates", subs: []string{"add", "list", "show", "rm"}, run: cmdCertificates},
		{name: "policies", subs: []string{"list", "show", "add", "rm", "rotate-key"}, run: cmdPolicies},
		{name: "agent", run: cmdAgent},
		{name: "forward", run: cmdForward},
		{name: "pipe", run: cmdPipe},
		{name: "shell", run: cmdShell},
		{name: "endpoints", run: cmdEndpoints},
		{name: "streams", subs: []string{"list", "kill"}, run: cmdStreams},
		{name: "logs", run: cmdLogs},
		{name: "console", run: cmdConsole},
		{name: "completion", words: completionShells, run: cmdCompletion},
		{name: "login", run: cmdLogin},
		{name: "logout", run: cmdLogout},
		{name: "version", run: cmdVersion},
		{name: "help", run: cmdHelp},
	}
	help := findCommand("help")
	for _, name := range commandNames() {
		if name != "help" {
			help.words = append(help.words, name)
		}
	}
}

// findCommand is the command named name, or nil.
func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// globals are the flags every command accepts, before or after its name.
type globals struct {
	Hub    string
	CA     string
	Stdout io.Writer
	Stderr io.Writer

	// hubFrom and caFrom name the config file's key that gave Hub or CA,
	// for errors about them; "" when a flag or the environment did.
	hubFrom, caFrom string

	// noSessions gives each stream of the command's service client a
	// connection of its own (forward's and pipe's --no-sessions).
	noSessions bool

	// probe, when set, is handed the flag set of the command run instead
	// of parsing it, and the command stops there (errProbe): that is how
	// commandFlags learns each command's real flags.
	probe func(*flag.FlagSet)
}

// addFlags registers the global flags on fs. What is already set (the
// environment, or flags given before the command) stays set but is not
// the flags' default: help prints defaults, and --hub holds a key.
func (g *globals) addFlags(fs *flag.FlagSet) {
	hub, ca := g.Hub, g.CA
	fs.StringVar(&g.Hub, "hub", "", "the hub's service connection string (`CONNSTR`); prefer tether login or the environment variable to the flag, which other users see in ps")
	fs.StringVar(&g.CA, "ca", "", "PEM `FILE` of CAs to trust for the hub; the system roots otherwise")
	g.Hub, g.CA = hub, ca
	cliflag.Env(fs, "hub", "TETHER_HUB")
	cliflag.Env(fs, "ca", "TETHER_CA")
	// Read by the commands that reach the hub, after parsing (useLogin).
	conf := cliConfigShown()
	cliflag.Fallback(fs, "hub", "hub in "+conf)
	cliflag.Fallback(fs, "ca", "ca in "+conf)
}

// globalFlags are the names addFlags registers.
var globalFlags = []string{"hub", "ca"}

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

// newFlagSet returns the flag set of the command name, with the global
// flags on it. Its help is usage, then the command's flags, then the
// global ones; g.parse prints it.
func (g *globals) newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // g.parse reports, in its own words
	g.addFlags(fs)
	fs.Usage = func() {
		w := fs.Output()
		io.WriteString(w, usage)
		var own []string
		for _, n := range cliflag.Names(fs) {
			if !slices.Contains(globalFlags, n) {
				own = append(own, n)
			}
		}
		if len(own) > 0 {
			fmt.Fprintln(w, "\nFlags:")
			cliflag.PrintFlags(w, fs, own)
		}
		fmt.Fprintln(w, "\nGlobal flags:")
		cliflag.PrintFlags(w, fs, globalFlags)
	}
	return fs
}

// parse parses a command's flags wherever they stand among its
// arguments and returns the others. Help (-h, --help) goes to stdout and
// is flag.ErrHelp, which run turns into success; a mistake goes to
// stderr, with the flag probably meant, and is errUsage.
func (g *globals) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	return g.parseHelpTo(fs, args, g.Stdout)
}

// parseHelpTo is parse with the help written to help.
func (g *globals) parseHelpTo(fs *flag.FlagSet, args []string, help io.Writer) ([]string, error) {
	if g.probe != nil {
		g.probe(fs)
		return nil, errProbe
	}
	pos, err := parseInterleaved(fs, args)
	switch {
	case err == nil:
		return pos, nil
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(help)
		fs.Usage()
		return nil, err
	}
	fmt.Fprintf(g.Stderr, "tether %s: %v\nRun 'tether %s --help' for its usage.\n", fs.Name(), cliflag.Explain(fs, err), fs.Name())
	return nil, errUsage
}

// checkSub checks the subcommand of a group such as devices against the
// command table: "-h", "--help" and "help" print the group's usage, one
// not in the table is an error with the one probably meant.
func checkSub(g *globals, group, sub, usage string) error {
	c := findCommand(group)
	switch {
	case slices.Contains(c.subs, sub):
		return nil
	case sub == "-h" || sub == "--help" || sub == "help":
		io.WriteString(g.Stdout, usage)
		return flag.ErrHelp
	}
	hint := ""
	if m := cliflag.Closest(sub, c.subs); m != "" {
		hint = fmt.Sprintf(" (did you mean %s?)", m)
	}
	fmt.Fprintf(g.Stderr, "tether: unknown %s command %q%s\n\n%s", group, sub, hint, usage)
	return errUsage
}

// errUsage marks an error already explained on stderr.
var errUsage = errors.New("usage")

// errProbe ends a command run by commandFlags once its flags are known.
var errProbe = errors.New("flags probed")

// commandFlags is the flag set the command parses (with sub, for a group
// such as devices): it runs the command with g.probe set, which stops it
// as it parses, so that what completion and the tests see is what the
// command accepts.
func commandFlags(c *command, sub string) *flag.FlagSet {
	var fs *flag.FlagSet
	g := &globals{Stdout: io.Discard, Stderr: io.Discard, probe: func(f *flag.FlagSet) { fs = f }}
	var args []string
	if sub != "" {
		args = []string{sub}
	}
	_ = c.run(context.Background(), g, args) // errProbe
	return fs
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var code exitCode
	if errors.As(err, &code) {
		os.Exit(int(code)) // the remote shell's status, already told
	}
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "tether:", err)
		}
		os.Exit(1)
	}
}

// printUsage writes tether's own help to w.
func printUsage(w io.Writer) {
	fs := flag.NewFlagSet("tether", flag.ContinueOnError)
	(&globals{}).addFlags(fs)
	io.WriteString(w, usageHead)
	cliflag.PrintFlags(w, fs, globalFlags)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	g := &globals{Stdout: stdout, Stderr: stderr}
	fs := flag.NewFlagSet("tether", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	g.addFlags(fs)
	if err := cliflag.ApplyEnv(fs); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return nil
		}
		fmt.Fprintf(stderr, "tether: %v\nRun 'tether --help' for its usage.\n", cliflag.Explain(fs, err))
		return errUsage
	}
	if fs.NArg() == 0 {
		printUsage(stderr)
		return errUsage
	}
	err := dispatch(ctx, g, fs.Arg(0), fs.Args()[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil // the command printed its help: no failure
	}
	return err
}

func dispatch(ctx context.Context, g *globals, name string, rest []string) error {
	c := findCommand(name)
	if c == nil {
		hint := ""
		if m := cliflag.Closest(name, commandNames()); m != "" {
			hint = fmt.Sprintf(" (did you mean %s?)", m)
		}
		fmt.Fprintf(g.Stderr, "tether: unknown command %q%s\n\n", name, hint)
		printUsage(g.Stderr)
		return errUsage
	}
	return c.run(ctx, g, rest)
}

// commandNames lists the commands, in the table's order.
func commandNames() []string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	return names
}

const helpUsage = `usage: tether help [COMMAND [SUBCOMMAND]]

Prints tether's help, or a command's.
`

// cmdHelp is "tether help": tether's help, or "tether help forward", the
// same as "tether forward --help".
func cmdHelp(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("help", helpUsage)
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		printUsage(g.Stdout)
		return nil
	}
	c := findCommand(pos[0])
	if c == nil || c.name == "help" {
		return dispatch(ctx, g, pos[0], []string{"--help"})
	}
	return c.run(ctx, g, append(pos[1:], "--help"))
}
