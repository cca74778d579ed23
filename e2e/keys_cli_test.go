package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

// keyOf is the key in a connection string.
func keyOf(t *testing.T, connStr string) string {
	t.Helper()
	_, key, ok := strings.Cut(strings.TrimSpace(connStr), "SharedAccessKey=")
	if !ok || key == "" {
		t.Fatalf("no key in %q", connStr)
	}
	return key
}

// modeOf is the permission bits of path.
func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// noKeyIn fails the test if a running process's command line holds any of
// keys: what every local user reads in ps.
func noKeyIn(t *testing.T, name string, p *proc, keys ...string) {
	t.Helper()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("%s's command line: %v", name, err)
	}
	if len(cmdline) == 0 {
		t.Fatalf("%s's command line is empty: has it exited?", name)
	}
	for _, k := range keys {
		if bytes.Contains(cmdline, []byte(k)) {
			t.Errorf("%s's command line holds a key: %q", name, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
}

// noKeyInGroup fails the test if the command line of any process in the
// process group pgid holds one of keys.
func noKeyInGroup(t *testing.T, pgid int, keys ...string) {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	seen := 0
	for _, stat := range stats {
		b, err := os.ReadFile(stat)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces, not ")".
		_, rest, _ := bytes.Cut(b, []byte(") "))
		if f := strings.Fields(string(rest)); len(f) < 3 || f[2] != fmt.Sprint(pgid) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(filepath.Dir(stat), "cmdline"))
		if err != nil {
			continue
		}
		seen++
		for _, k := range keys {
			if bytes.Contains(cmdline, []byte(k)) {
				t.Errorf("a command line holds a key: %q", bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
			}
		}
	}
	if seen == 0 {
		t.Fatalf("no process in group %d", pgid)
	}
}

// TestKeysOffCommandLines follows the README with the real binaries and
// no key ever on a command line or in the environment: tether login reads
// the owner's connection string from stdin into a 0600 config file,
// devices add --out writes the device's to a 0600 file, the agent reads
// it with --device-file, and forward, pipe and devices reach the hub
// through the login alone. Neither running program's command line holds a
// key; devices show leaves keys out; a config file others can read is
// refused; logout ends it.
func TestKeysOffCommandLines(t *testing.T) {
	t.Parallel()
	h := startProcHub(t)
	home := t.TempDir()
	conf := filepath.Join(home, "config", "tether", "config.toml")
	// Nothing from the test's environment: no hub, no CA, no key.
	env := []string{"XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "TETHER_HUB=", "TETHER_CA=", "TETHER_DEVICE="}
	owner, err := os.ReadFile(filepath.Join(h.dir, "owner.connstr"))
	if err != nil {
		t.Fatal(err)
	}
	ownerKey := keyOf(t, string(owner))
	tether := func(stdin []byte, args ...string) toolResult {
		t.Helper()
		var in io.Reader
		if stdin != nil {
			in = bytes.NewReader(stdin)
		}
		return runTool(t, time.Minute, env, in, h.tether, args...)
	}

	tether(owner, "login", "--ca", filepath.Join(h.dir, "ca.pem"), "-").mustSucceed(t, "tether login -")
	if m := modeOf(t, conf); m != 0o600 {
		t.Errorf("the config file is mode %04o, want 0600", m)
	}

	devFile := filepath.Join(home, "dev1.connstr")
	r := tether(nil, "devices", "add", "dev1", "--out", devFile)
	r.mustSucceed(t, "devices add --out")
	if len(r.stdout) != 0 {
		t.Errorf("devices add --out wrote %q to stdout", r.stdout)
	}
	if m := modeOf(t, devFile); m != 0o600 {
		t.Errorf("the device file is mode %04o, want 0600", m)
	}
	devStr, _ := os.ReadFile(devFile)
	devKey := keyOf(t, string(devStr))

	// The file is never overwritten, and then no device is made.
	if r := tether(nil, "devices", "add", "dev2", "--out", devFile); r.err == nil || !strings.Contains(string(r.stderr), "--force") {
		t.Errorf("devices add over an existing file: %v\n%s", r.err, r.stderr)
	}
	if r := tether(nil, "devices", "show", "dev2"); r.err == nil || !strings.Contains(string(r.stderr), "not found") {
		t.Errorf("dev2 was created although its key had nowhere to go: %v %s", r.err, r.stderr)
	}

	echo := startEcho(t)
	agent := startProc(t, env, h.tether, "agent", "--device-file", devFile, "--ca", filepath.Join(h.dir, "ca.pem"), "--allow", "echo="+echo)
	fwd := startProc(t, env, h.tether, "forward", "dev1", "echo", "--listen", "127.0.0.1:0")
	waitConnected(t, env, h.tether, "dev1")
	fwdAddr := fwd.forwarding(t, 30*time.Second)
	if err := echoThrough(fwdAddr, "no key on any command line", 10*time.Second); err != nil {
		t.Fatalf("echo through the forwarder: %v", err)
	}
	noKeyIn(t, "the agent", agent, devKey, ownerKey)
	noKeyIn(t, "the forwarder", fwd, devKey, ownerKey)

	r = tether([]byte("through pipe\n"), "pipe", "dev1", "echo")
	r.mustSucceed(t, "pipe")
	if string(r.stdout) != "through pipe\n" {
		t.Errorf("pipe's stdout %q", r.stdout)
	}

	r = tether(nil, "devices", "show", "dev1")
	r.mustSucceed(t, "devices show")
	var d wire.Device
	if err := json.Unmarshal(r.stdout, &d); err != nil || d.DeviceID != "dev1" || bytes.Contains(r.stdout, []byte(devKey)) {
		t.Errorf("devices show (%v) shows a key, or not the device:\n%s", err, r.stdout)
	}
	r = tether(nil, "devices", "show", "dev1", "--show-keys")
	if !bytes.Contains(r.stdout, []byte(devKey)) {
		t.Errorf("devices show --show-keys shows no key:\n%s", r.stdout)
	}

	// A new key for the device, into a file of its own; the old one stops
	// working.
	newFile := filepath.Join(home, "dev1.new.connstr")
	tether(nil, "devices", "rotate-key", "dev1", "--out", newFile).mustSucceed(t, "devices rotate-key --out")
	if m := modeOf(t, newFile); m != 0o600 {
		t.Errorf("the rotated key's file is mode %04o, want 0600", m)
	}
	if b, _ := os.ReadFile(newFile); keyOf(t, string(b)) == devKey {
		t.Error("rotate-key --out wrote the old key")
	}

	for _, p := range []*proc{agent, fwd} {
		checkNoSecrets(t, "a tether process", p.out.String(), string(devStr))
	}

	if err := os.Chmod(conf, 0o644); err != nil {
		t.Fatal(err)
	}
	r = tether(nil, "devices", "list")
	if r.err == nil || !strings.Contains(string(r.stderr), "chmod 600 "+conf) || bytes.Contains(r.stderr, []byte(ownerKey)) {
		t.Errorf("a config file of mode 0644: %v\n%s", r.err, r.stderr)
	}
	tether(nil, "logout").mustSucceed(t, "logout")
	if _, err := os.Stat(conf); !os.IsNotExist(err) {
		t.Errorf("logout left the config file: %v", err)
	}
}
