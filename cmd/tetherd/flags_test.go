package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-io/tether/internal/cliflag"
	"github.com/tether-io/tether/internal/version"
)

// clearEnv unsets, for the test, every variable a tetherd flag reads.
func clearEnv(t *testing.T) {
	t.Helper()
	fs, _, _ := newFlagSet(&config{})
	for _, name := range cliflag.Names(fs) {
		if env := cliflag.EnvOf(fs, name); env != "" { // --version has none
			t.Setenv(env, "") // empty counts as unset
		}
	}
}

// TestHelpShowsNoSecret sets every variable a flag reads, the way a
// deployment's environment file does, and asks for help and makes a
// typo: neither may print a value from the environment (TETHER_NATS holds
// a password, TETHER_CLUSTER_SECRET the cluster's secret). A new flag is
// covered without a new row.
func TestHelpShowsNoSecret(t *testing.T) {
	clearEnv(t)
	fs, _, _ := newFlagSet(&config{})
	var secrets []string
	for _, name := range cliflag.Names(fs) {
		env := cliflag.EnvOf(fs, name)
		if name == "version" {
			if env != "" {
				t.Errorf("--version has the variable %s: a variable must never stop the start", env)
			}
			continue
		}
		if env == "" {
			t.Errorf("--%s has no environment variable", name)
			continue
		}
		// Each value parses as its flag's type, so that parsing gets as
		// far as the help; the strings are the ones that could be keys.
		v := "secret-" + name
		switch cliflag.Kind(fs, name) {
		case "int", "float":
			v = "3"
		case "duration":
			v = "7s"
		case "bool":
			v = "true"
		default:
			secrets = append(secrets, v)
		}
		t.Setenv(env, v)
	}
	t.Setenv("TETHER_NATS", "nats://hub:pa55word@nats.example:4222")
	secrets = append(secrets, "pa55word")

	for _, args := range [][]string{{"--help"}, {"-h"}, {"--lisen", ":1"}, {"--data"}} {
		var out bytes.Buffer
		_, err := parseFlags(args, &out)
		text := out.String()
		if err != nil {
			text += "\n" + err.Error()
		}
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%q prints %q from the environment:\n%s", args, s, text)
			}
		}
		if args[0] == "--help" && !strings.Contains(text, "(default: $TETHER_NATS, set)") {
			t.Errorf("the help does not say where --nats comes from:\n%s", text)
		}
	}
}

// TestHelp: help goes to stdout, begins by saying what tetherd is, and
// sorts every flag into one group.
func TestHelp(t *testing.T) {
	clearEnv(t)
	var out bytes.Buffer
	if _, err := parseFlags([]string{"--help"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v, want flag.ErrHelp", err)
	}
	help := out.String()
	if !strings.HasPrefix(help, "usage: tetherd") || !strings.Contains(help[:300], "tetherd is the Tether hub") {
		t.Errorf("help does not begin with what tetherd is:\n%.400s", help)
	}
	fs, groups, _ := newFlagSet(&config{})
	if rest := cliflag.Ungrouped(fs, groups); len(rest) > 0 {
		t.Errorf("flags in no group of the help: %q", rest)
	}
	seen := map[string]string{}
	for _, g := range groups {
		if !strings.Contains(help, "\n"+g.Title+":\n") {
			t.Errorf("help has no group %q", g.Title)
		}
		for _, n := range g.Names {
			if other, dup := seen[n]; dup {
				t.Errorf("--%s is in %q and %q", n, other, g.Title)
			}
			seen[n] = g.Title
			if !strings.Contains(help, "\n  --"+n+" ") && !strings.Contains(help, "\n  --"+n+"\n") {
				t.Errorf("--%s is not in the help", n)
			}
		}
	}
	// A bad variable does not keep the help from being shown.
	t.Setenv("TETHER_TLS", "flase")
	out.Reset()
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "(default: $TETHER_TLS, set)") {
		t.Errorf("-h with a bad TETHER_TLS: %v\n%s", err, out.String())
	}
	for _, want := range []string{"Listeners", "TLS", "Cluster", "Limits", "Logging"} {
		if !strings.Contains(help, "\n"+want) {
			t.Errorf("help has no %s group", want)
		}
	}
}

// TestBadStartLeavesNoDataFolder: a mistaken flag, a bad environment
// value or a port in use stops tetherd with an error naming it, before it
// creates the data folder.
func TestBadStartLeavesNoDataFolder(t *testing.T) {
	clearEnv(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	inUse := busy.Addr().String()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	cluster := []string{"--cluster-name", "c", "--cluster-peers", "127.0.0.1:1"}

	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"mqtt-listen of", []string{"--mqtt-listen", "of"}, nil, `--mqtt-listen "of": want HOST:PORT or off (did you mean off?)`},
		{"TETHER_MQTT_LISTEN of", nil, map[string]string{"TETHER_MQTT_LISTEN": "OFF"}, `TETHER_MQTT_LISTEN "OFF": want HOST:PORT or off (did you mean off?)`},
		{"listen without colon", []string{"--listen", "8443"}, nil, `did you mean :8443`},
		{"metrics-listen", []string{"--metrics-listen", "yes"}, nil, `--metrics-listen "yes": want HOST:PORT or off or on`},
		{"log level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"TETHER_TLS", nil, map[string]string{"TETHER_TLS": "flase"}, `TETHER_TLS "flase": want true or false`},
		{"TETHER_MAX_STREAMS", nil, map[string]string{"TETHER_MAX_STREAMS": "lots"}, `TETHER_MAX_STREAMS "lots": want a whole number`},
		{"unknown flag", []string{"--lisen", ":1"}, nil, "unknown flag --lisen (did you mean --listen?)"},
		{"replicas", []string{"--replicas", "9"}, nil, "--replicas 9: want 0 (automatic) to 5"},
		{"listen busy", []string{"--listen", inUse}, nil, "--listen " + inUse + ": bind: address already in use"},
		{"mqtt-listen busy", []string{"--mqtt-listen", inUse}, nil, "--mqtt-listen " + inUse + ": bind: address already in use"},
		{"metrics-listen busy", []string{"--metrics-listen", inUse}, nil, "--metrics-listen " + inUse + ": bind: address already in use"},
		{"TETHER_LISTEN busy", nil, map[string]string{"TETHER_LISTEN": inUse}, "TETHER_LISTEN " + inUse + ": bind: address already in use"},
		{"cluster-listen busy", append([]string{"--cluster-listen", inUse}, cluster...), map[string]string{"TETHER_CLUSTER_SECRET": "s"}, "--cluster-listen " + inUse + ": bind: address already in use"},
		{"tls-cert missing", []string{"--tls-cert", missing, "--tls-key", missing}, nil, "--tls-cert, --tls-key: open " + missing},
		{"cluster-tls missing", append([]string{"--cluster-tls-cert", missing, "--cluster-tls-key", missing, "--cluster-tls-ca", missing}, cluster...), map[string]string{"TETHER_CLUSTER_SECRET": "s"}, missing},
	}
	// A cancelled context: a start that got past every check would stop
	// at once instead of serving, and still fail the test below.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			data := filepath.Join(t.TempDir(), "data")
			args := []string{"--data", data}
			for _, name := range []string{"listen", "mqtt-listen"} {
				if tc.env[cliflag.EnvName(envPrefix, name)] == "" {
					args = append(args, "--"+name, "127.0.0.1:0") // no fixed port
				}
			}
			args = append(args, tc.args...)
			c, err := parseFlags(args, io.Discard)
			if err == nil {
				err = run(ctx, c, io.Discard, io.Discard)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant one saying %q", err, tc.want)
			}
			if _, serr := os.Stat(data); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("the data folder was created (%v)", serr)
			}
		})
	}
}

// TestVersionFlag: --version prints the version and stops, before any
// check of the other flags or the environment, so that it answers for a
// hub that would not start; TETHER_VERSION, which an image may carry for
// its own purposes, neither prints it nor fails the start.
func TestVersionFlag(t *testing.T) {
	clearEnv(t)
	t.Setenv("TETHER_TLS", "flase")
	data := filepath.Join(t.TempDir(), "data")
	var out bytes.Buffer
	_, err := parseFlags([]string{"--data", data, "--listen", "nonsense", "--version"}, &out)
	if !errors.Is(err, errVersion) {
		t.Fatalf("--version: %v, want errVersion", err)
	}
	if want := version.Line("tetherd") + "\n"; out.String() != want {
		t.Errorf("--version printed %q, want %q", out.String(), want)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--version touched the data folder (%v)", err)
	}

	t.Setenv("TETHER_TLS", "")
	t.Setenv("TETHER_VERSION", "0.3.0")
	out.Reset()
	c, err := parseFlags([]string{"--data", data}, &out)
	if err != nil || c.version || out.Len() != 0 {
		t.Errorf("with TETHER_VERSION set: %v, version %v, printed %q; want a normal start", err, c != nil && c.version, out.String())
	}
}
