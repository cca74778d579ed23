package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Values a user's environment holds; none may appear in any help or
// error about flags.
const (
	secretHubKey = "T3duZXIta2V5LXRoYXQtbXVzdC1zdGF5LXNlY3JldA=="
	secretDevKey = "RGV2aWNlLWtleS10aGF0LW11c3Qtc3RheS1zZWNyZXQ="
	// secretFileKey is in tether login's config file.
	secretFileKey = "TG9naW4tZmlsZS1rZXktdGhhdC1tdXN0LXN0YXktc2VjcmV0"
)

// setSecretEnv fills every variable tether reads, as a user's shell
// does, and returns the values that must never be printed.
func setSecretEnv(t *testing.T) []string {
	t.Helper()
	hub := "HostName=hub.example;SharedAccessKeyName=iothubowner;SharedAccessKey=" + secretHubKey
	dev := "HostName=hub.example;DeviceId=dev1;SharedAccessKey=" + secretDevKey
	t.Setenv("TETHER_HUB", hub)
	t.Setenv("TETHER_DEVICE", dev)
	secrets := []string{secretHubKey, secretDevKey}
	for name, env := range agentEnvs() {
		if name == "device" {
			continue
		}
		v := "/private/" + name + "-from-env"
		t.Setenv(env, v)
		secrets = append(secrets, v)
	}
	// tether login's config file, a source of the hub and the CA too.
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	conf := "hub = \"HostName=hub.example;SharedAccessKeyName=iothubowner;SharedAccessKey=" + secretFileKey + "\"\nca = \"/private/ca-from-config-file\"\n"
	if err := os.MkdirAll(filepath.Join(dir, "tether"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tether", "config.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return append(secrets, secretFileKey, "/private/ca-from-config-file")
}

// commandPaths are the command lines that reach each command and
// subcommand of the table: {"forward"}, {"devices", "add"}, ...
func commandPaths() [][]string {
	var paths [][]string
	for _, c := range commands {
		if len(c.subs) == 0 {
			paths = append(paths, []string{c.name})
		}
		for _, sub := range c.subs {
			paths = append(paths, []string{c.name, sub})
		}
	}
	return paths
}

// typoOf is a flag of the command misspelt, one letter dropped: what it
// should suggest. The command's own flags come first, the global ones
// otherwise.
func typoOf(t *testing.T, path []string) (typo, meant string) {
	t.Helper()
	c := findCommand(path[0])
	sub := ""
	if len(path) > 1 {
		sub = path[1]
	}
	fs := commandFlags(c, sub)
	if fs == nil {
		t.Fatalf("%q never parses its flags through globals.parse", path)
	}
	meant = "hub"
	for _, n := range flagNames(completionTable(), func(compFlag) bool { return true }) {
		if fs.Lookup(n) != nil && !slices.Contains(globalFlags, n) && len(n) > 4 {
			meant = n
			break
		}
	}
	return meant[:1] + meant[2:], meant
}

// TestHelpShowsNoSecret asks every command and subcommand for its help
// and makes a typo in one of its flags, with every variable tether reads
// set: neither may show a value from the environment or the command line
// (TETHER_HUB holds the owner key). The commands come from the command
// table, so a new one is covered without a new row.
func TestHelpShowsNoSecret(t *testing.T) {
	secrets := setSecretEnv(t)
	given := "HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + testPolicyKey
	secrets = append(secrets, testPolicyKey)
	ctx := context.Background()
	check := func(args []string, stdout, stderr string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(stdout+stderr, s) {
				t.Errorf("%q shows %q:\nstdout:\n%s\nstderr:\n%s", args, s, stdout, stderr)
			}
		}
	}
	for _, path := range commandPaths() {
		for _, help := range [][]string{{"--help"}, {"-h"}} {
			args := append(slices.Clone(path), help...)
			stdout, stderr, err := runCLI(ctx, args...)
			if err != nil {
				t.Errorf("%q: %v", args, err)
			}
			check(args, stdout, stderr)
			helpText := stdout
			if path[0] == "pipe" {
				helpText = stderr // its stdout is the stream's
			}
			if !strings.Contains(helpText, "tether "+path[0]) || !strings.Contains(helpText, "(default: $TETHER_HUB, set)") {
				t.Errorf("%q: help does not say where --hub comes from:\nstdout:\n%s\nstderr:\n%s", args, stdout, stderr)
			}
		}
		// With the environment empty, the config file is where the hub
		// comes from: help says so and shows nothing of it.
		hub, ca := os.Getenv("TETHER_HUB"), os.Getenv("TETHER_CA")
		t.Setenv("TETHER_HUB", "")
		t.Setenv("TETHER_CA", "")
		args := append(slices.Clone(path), "--help")
		stdout, stderr, _ := runCLI(ctx, args...)
		check(args, stdout, stderr)
		want := "(default: $TETHER_HUB, else hub in " + cliConfigShown() + ")"
		if path[0] == "agent" {
			want = "(default: $TETHER_CA, else ca in the --config file)" // not tether login's
		}
		if !strings.Contains(stdout+stderr, want) {
			t.Errorf("%q without TETHER_HUB: help does not say %q:\n%s%s", args, want, stdout, stderr)
		}
		t.Setenv("TETHER_HUB", hub)
		t.Setenv("TETHER_CA", ca)
		// A value given before the command is no default either.
		args = append([]string{"--hub", given}, append(slices.Clone(path), "--help")...)
		stdout, stderr, _ = runCLI(ctx, args...)
		check(args, stdout, stderr)

		typo, meant := typoOf(t, path)
		args = append(slices.Clone(path), "x", "--"+typo, "v")
		stdout, stderr, err := runCLI(ctx, args...)
		check(args, stdout, stderr)
		if !errors.Is(err, errUsage) || stdout != "" {
			t.Errorf("%q: err %v, stdout %q; want errUsage and nothing on stdout", args, err, stdout)
		}
		if want := "unknown flag --" + typo + " (did you mean --" + meant + "?)"; !strings.Contains(stderr, want) {
			t.Errorf("%q: stderr %q, want it to say %q", args, stderr, want)
		}
	}
	// The typo of the issue that found this.
	stdout, stderr, _ := runCLI(ctx, "forward", "d", "ssh", "--lisen", ":2222")
	check([]string{"forward --lisen"}, stdout, stderr)
	if !strings.Contains(stderr, "did you mean --listen?") {
		t.Errorf("forward --lisen: %q", stderr)
	}
}

// runCLI runs tether as main does, with the environment the test set.
func runCLI(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var out strings.Builder
	errb := newLockedBuffer()
	err = run(ctx, args, &out, errb)
	return out.String(), errb.String(), err
}

// TestTopLevelHelp: asked for, help goes to stdout and is no failure; a
// mistake gets it on stderr and fails. It names every command.
func TestTopLevelHelp(t *testing.T) {
	secrets := setSecretEnv(t)
	ctx := context.Background()
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		stdout, stderr, err := runCLI(ctx, args...)
		if err != nil || stderr != "" || !strings.HasPrefix(stdout, "usage: tether ") {
			t.Errorf("%q: err %v, stderr %q, stdout %.60q; want the help on stdout", args, err, stderr, stdout)
		}
		for _, c := range commands {
			if !strings.Contains(stdout, "\n  "+c.name+" ") {
				t.Errorf("%q: the help does not name %s", args, c.name)
			}
		}
		for _, s := range secrets {
			if strings.Contains(stdout, s) {
				t.Errorf("%q shows %q", args, s)
			}
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage: tether "},
		{[]string{"--hbu", "x"}, "unknown flag --hbu (did you mean --hub?)"},
		{[]string{"fowrard"}, `unknown command "fowrard" (did you mean forward?)`},
		{[]string{"devices", "lsit"}, `unknown devices command "lsit" (did you mean list?)`},
		{[]string{"certificates", "sohw"}, `unknown certificates command "sohw" (did you mean show?)`},
		{[]string{"help", "frob"}, `unknown command "frob"`},
	} {
		stdout, stderr, err := runCLI(ctx, tc.args...)
		if !errors.Is(err, errUsage) || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: err %v, stdout %q, stderr %q; want errUsage and %q on stderr", tc.args, err, stdout, stderr, tc.want)
		}
	}
	stdout, _, err := runCLI(ctx, "help", "devices", "rotate-key")
	if err != nil || !strings.Contains(stdout, "--secondary") {
		t.Errorf("help devices rotate-key: %v\n%s", err, stdout)
	}
}
