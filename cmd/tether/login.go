package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/tether-io/tether/sas"
)

// tether's config file holds what `tether login` was given: the hub's
// connection string and the CA to trust for it. The commands that talk to
// the hub take from it what neither a flag nor the environment gives, so
// that `ProxyCommand tether pipe %h ssh` works in every shell without the
// key exported in each. It holds a key: mode 0600, and tether refuses to
// read it when anyone else may.

// cliConfig is the config file's contents. Any other key is an error, so
// that a typo does not silently leave a setting unset.
type cliConfig struct {
	Hub string `toml:"hub"`
	CA  string `toml:"ca,omitempty"`
}

const cliConfigHeader = `# tether's config file, written by tether login; tether logout removes it.
# hub holds the hub's key: keep this file mode 0600, tether refuses it otherwise.
`

// cliConfigPath is where the config file is: $XDG_CONFIG_HOME/tether,
// else ~/.config/tether. A relative XDG_CONFIG_HOME is ignored, as the
// XDG spec says.
func cliConfigPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no place for tether's config file: set HOME or XDG_CONFIG_HOME (%w)", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "tether", "config.toml"), nil
}

// cliConfigShown is the config file's path as help shows it: ~ for the
// home folder, which is shorter and the same for everyone.
func cliConfigShown() string {
	path, err := cliConfigPath()
	if err != nil {
		return "tether's config file"
	}
	if home, err := os.UserHomeDir(); err == nil {
		if rest, ok := strings.CutPrefix(path, home+string(filepath.Separator)); ok {
			return "~/" + rest
		}
	}
	return path
}

// loadCLIConfig reads and strictly decodes the config file at path. Its
// errors name the file, the line and the key, never a value: the file
// holds a key. A relative ca is taken from the file's folder, as no
// working folder is the right one for ssh's ProxyCommand.
func loadCLIConfig(path string) (*cliConfig, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	var c cliConfig
	if err := decodeTOML(path, data, &c, "hub, ca"); err != nil {
		return nil, err
	}
	if c.CA != "" && !filepath.IsAbs(c.CA) {
		c.CA = filepath.Join(filepath.Dir(path), c.CA)
	}
	return &c, nil
}

// useLogin takes from the config file what neither a flag nor the
// environment gave: the hub's connection string and the CA. The file is
// read only then; one that is missing is no error (the missing hub is
// reported as such), one that others may read is.
func (g *globals) useLogin() error {
	if g.Hub != "" && g.CA != "" {
		return nil
	}
	path, err := cliConfigPath()
	if err != nil {
		return nil
	}
	c, err := loadCLIConfig(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	}
	if g.Hub == "" && c.Hub != "" {
		g.Hub, g.hubFrom = c.Hub, "hub in "+path
	}
	if g.CA == "" && c.CA != "" {
		g.CA, g.caFrom = c.CA, "ca in "+path
	}
	return nil
}

// loginStdin is what `tether login -` reads; tests replace it.
var loginStdin io.Reader = os.Stdin

func loginUsage() string {
	return `usage: tether login CONNSTR|- [--ca FILE]

Keeps the hub's connection string, and the CA to trust for it, in tether's
config file (mode 0600), so that every command reaches the hub without
--hub or TETHER_HUB, ssh's ProxyCommand 'tether pipe %h ssh' included,
from any shell. A flag or an environment variable still wins over the
file, which is

  ` + cliConfigShown() + `

With - the connection string is read from stdin, so that it shows neither
in ps nor in the shell's history:

  tether login --ca ca.pem - < owner.connstr

login checks the connection string with the hub before it writes the file,
and replaces an earlier login. The CA is kept as the file's absolute path,
not copied: leave the file where it is. tether logout removes the config
file. Better than the owner's connection string: a policy with the rights
you need (tether policies).
`
}

func cmdLogin(ctx context.Context, g *globals, args []string) error {
	flags := g.newFlagSet("login", loginUsage())
	pos, err := g.parse(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("login takes the hub's connection string: tether login - < FILE reads it from stdin, out of ps and the shell's history")
	}
	path, err := cliConfigPath()
	if err != nil {
		return err
	}
	hub := pos[0]
	if hub == "-" {
		if hub, err = readConnStr(loginStdin, g.Stderr); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(g.Stderr, "tether: a connection string on the command line shows in ps and stays in the shell's history: tether login - reads it from stdin")
	}
	ca := g.CA // --ca or TETHER_CA
	if ca != "" {
		if ca, err = filepath.Abs(ca); err != nil {
			return err
		}
	}

	// Checked as the commands will use it, with nothing else filled in.
	probe := &globals{Hub: hub, CA: ca, Stdout: g.Stdout, Stderr: g.Stderr, hubFrom: "tether login"}
	c, err := serviceClient(probe)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.StreamingEndpoints(ctx); err != nil {
		return fmt.Errorf("%w; nothing written", explainHubError(err, c, ""))
	}

	var buf bytes.Buffer
	buf.WriteString(cliConfigHeader)
	if err := toml.NewEncoder(&buf).Encode(cliConfig{Hub: strings.TrimSpace(hub), CA: ca}); err != nil {
		return err
	}
	old, _ := loadCLIConfig(path)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	k, err := createKeyFile(path, true)
	if err != nil {
		return err
	}
	if err := k.commit(buf.Bytes()); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}

	now := loginName(hub)
	if old != nil {
		if was := loginName(old.Hub); was != now {
			fmt.Fprintf(g.Stderr, "tether: replaced the login to %s\n", was)
		}
	}
	fmt.Fprintf(g.Stderr, "tether: logged in to %s; %s (mode 0600) holds the connection string, tether logout removes it\n", now, path)
	if os.Getenv("TETHER_HUB") != "" {
		fmt.Fprintln(g.Stderr, "tether: TETHER_HUB is set here and wins over the file: unset TETHER_HUB to use the login")
	}
	return nil
}

// loginName names a login in messages: the hub and the policy, never the
// key.
func loginName(connStr string) string {
	cs, err := sas.ParseConnectionString(connStr)
	if err != nil {
		return "a hub (unreadable connection string)"
	}
	return fmt.Sprintf("hub %s as %s", cs.HostName, cs.SharedAccessKeyName)
}

// readConnStr reads a connection string from r, stdin: the first line
// from a terminal, after a prompt on stderr; else all of it, which must be
// one line.
func readConnStr(r io.Reader, stderr io.Writer) (string, error) {
	if isCharDevice(r) {
		fmt.Fprint(stderr, "Connection string: ")
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading stdin: %w", err)
		}
		return connStrFrom("stdin", []byte(line))
	}
	b, err := io.ReadAll(io.LimitReader(r, maxKeyFile+1))
	if err != nil {
		return "", fmt.Errorf("reading stdin: %w", err)
	}
	if len(b) > maxKeyFile {
		return "", fmt.Errorf("stdin holds over %d KiB: not a connection string", maxKeyFile>>10)
	}
	return connStrFrom("stdin", b)
}

// isCharDevice says whether f is a character device: a terminal, as far as
// the standard library can tell (and /dev/null, which is harmless).
func isCharDevice(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	st, err := file.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

const logoutUsage = `usage: tether logout

Removes tether's config file, which tether login wrote: the commands no
longer reach the hub without --hub or TETHER_HUB.
`

func cmdLogout(ctx context.Context, g *globals, args []string) error {
	flags := g.newFlagSet("logout", logoutUsage)
	pos, err := g.parse(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("logout takes no arguments (got %q)", pos)
	}
	path, err := cliConfigPath()
	if err != nil {
		return err
	}
	switch err := os.Remove(path); {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(g.Stderr, "tether: not logged in: there is no %s\n", path)
	case err != nil:
		return err
	default:
		fmt.Fprintf(g.Stderr, "tether: logged out: removed %s\n", path)
	}
	if os.Getenv("TETHER_HUB") != "" {
		fmt.Fprintln(g.Stderr, "tether: TETHER_HUB is still set here")
	}
	return nil
}
