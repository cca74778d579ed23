package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-io/tether/device/devicetest"
	"github.com/tether-io/tether/wire"
)

// writeKeyFile writes text to a new file of mode perm and returns its path.
func writeKeyFile(t *testing.T, text string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dev1.connstr")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

// TestAgentDeviceFile: the agent takes its connection string from a file
// only its owner may read and connects with it, saying nothing about ps;
// a file others may read is refused with its mode and the fix, and
// --device on the command line gets a warning.
func TestAgentDeviceFile(t *testing.T) {
	key := devicetest.NewKey()
	hub := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	ca := caFile(t)
	allow := []string{"--ca", ca, "--allow", "ssh=127.0.0.1:22"}

	for _, perm := range []os.FileMode{0o644, 0o640, 0o604, 0o620} {
		path := writeKeyFile(t, hub.ConnStr(key)+"\n", perm)
		stderr, err := runAgent(t, append(allow, "--device-file", path)...)
		if err == nil {
			t.Fatalf("mode %04o: the agent started", perm)
		}
		if want := fmt.Sprintf("--device-file: %s is mode %04o: ", path, perm); !strings.Contains(err.Error(), want) || !strings.HasSuffix(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: err = %v, want %q and the fix, chmod 600", perm, err, want)
		}
		if strings.Contains(err.Error()+stderr, key) {
			t.Errorf("mode %04o: the key shows", perm)
		}
	}

	path := writeKeyFile(t, hub.ConnStr(key)+"\n", 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	stderr, done := startAgent(t, ctx, append(allow, "--device-file", path)...)
	stderr.waitFor(t, "agent running")
	hub.NextConnect()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent with --device-file: %v", err)
	}
	if strings.Contains(stderr.String(), " ps") || strings.Contains(stderr.String(), key) {
		t.Errorf("agent with --device-file warned or showed the key:\n%s", stderr)
	}

	// The same string on the command line works, with a warning.
	ctx, cancel = context.WithCancel(context.Background())
	stderr, done = startAgent(t, ctx, append(allow, "--device", hub.ConnStr(key))...)
	stderr.waitFor(t, "agent running")
	hub.NextConnect()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent with --device: %v", err)
	}
	if !strings.Contains(stderr.String(), "--device shows the device's key to every local user (ps") || !strings.Contains(stderr.String(), "--device-file") {
		t.Errorf("agent with --device did not warn:\n%s", stderr)
	}
}

// TestDeviceFileSettings: where the device's connection string may come
// from, which source wins, and what is wrong with a file.
func TestDeviceFileSettings(t *testing.T) {
	const cs = "HostName=h;DeviceId=dev1;SharedAccessKey=ZGV2"
	good := writeKeyFile(t, "\n"+cs+"\n\n", 0o600)
	other := writeKeyFile(t, strings.Replace(cs, "dev1", "dev2", 1), 0o600)
	conf := writeConfig(t, "device_file = \""+other+"\"\n")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // the device, or "from" for DeviceFrom
		from string
	}{
		{"flag", []string{"--device-file", good}, nil, cs, "--device-file " + good},
		{"env", nil, map[string]string{"TETHER_DEVICE_FILE": good}, cs, "TETHER_DEVICE_FILE " + good},
		{"config file", []string{"--config", conf}, nil, strings.Replace(cs, "dev1", "dev2", 1), "device_file in " + conf + " " + other},
		{"TETHER_DEVICE over the file's device_file", []string{"--config", conf}, map[string]string{"TETHER_DEVICE": cs}, cs, "TETHER_DEVICE"},
		{"--device-file over TETHER_DEVICE", []string{"--device-file", good}, map[string]string{"TETHER_DEVICE": "HostName=x;DeviceId=x;SharedAccessKey=eA=="}, cs, "--device-file " + good},
		{"--device over TETHER_DEVICE_FILE", []string{"--device", cs}, map[string]string{"TETHER_DEVICE_FILE": other}, cs, "--device"},
	} {
		cfg, err := resolve(t, tc.args, "", tc.env)
		if err != nil || cfg.Device != tc.want || cfg.DeviceFrom != tc.from {
			t.Errorf("%s: device %q from %q (%v), want %q from %q", tc.name, cfg.safeDevice(), cfg.safeFrom(), err, tc.want, tc.from)
		}
	}

	both := writeConfig(t, "device = \""+cs+"\"\ndevice_file = \""+good+"\"\n")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"both flags", []string{"--device", cs, "--device-file", good}, nil, "--device and --device-file both give the device's connection string: keep one"},
		{"both variables", nil, map[string]string{"TETHER_DEVICE": cs, "TETHER_DEVICE_FILE": good}, "TETHER_DEVICE and TETHER_DEVICE_FILE both"},
		{"both in the file", []string{"--config", both}, nil, "device in " + both + " and device_file in " + both + " both"},
		{"missing", []string{"--device-file", good + ".nope"}, nil, "--device-file: open " + good + ".nope: no such file"},
		{"empty", []string{"--device-file", writeKeyFile(t, " \n", 0o600)}, nil, "is empty"},
		{"two lines", []string{"--device-file", writeKeyFile(t, cs+"\n"+cs+"\n", 0o600)}, nil, "more than one line"},
		{"a folder", []string{"--device-file", t.TempDir()}, nil, "is a folder"},
		{"named empty", []string{"--device-file", ""}, nil, "--device-file: no file named"},
	} {
		_, err := resolve(t, tc.args, "", tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "ZGV2") {
			t.Errorf("%s: err = %v, want %q and no key", tc.name, err, tc.want)
		}
	}

	// A certificate device's string holds no key: its file may be read
	// by anyone.
	x509 := "HostName=h;DeviceId=cam1;x509=true"
	if cfg, err := resolve(t, []string{"--device-file", writeKeyFile(t, x509+"\n", 0o644)}, "", nil); err != nil || cfg.Device != x509 {
		t.Errorf("a certificate device's file of mode 0644: %v", err)
	}

	// systemd's copy in its credentials folder may show 0440 (an ACL for
	// the service's user): it is the service's alone, and accepted there
	// only.
	creds := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	cred := filepath.Join(creds, "device.connstr")
	if err := os.WriteFile(cred, []byte(cs), 0o440); err != nil {
		t.Fatal(err)
	}
	if cfg, err := resolve(t, nil, "", map[string]string{"TETHER_DEVICE_FILE": cred}); err != nil || cfg.Device != cs {
		t.Errorf("credential of mode 0440: %v", err)
	}
	if _, err := resolve(t, []string{"--device-file", writeKeyFile(t, cs, 0o440)}, "", nil); err == nil || !strings.Contains(err.Error(), "its group can read it") {
		t.Errorf("mode 0440 outside the credentials folder: err = %v, want a refusal", err)
	}
}

// safeDevice and safeFrom let a failed case print a nil config.
func (c *agentConfig) safeDevice() string {
	if c == nil {
		return ""
	}
	return c.Device
}

func (c *agentConfig) safeFrom() string {
	if c == nil {
		return ""
	}
	return c.DeviceFrom
}

// TestDevicesAddOut: --out writes the connection string to a new file of
// mode 0600 and nothing to stdout; an existing file is never replaced
// without --force, and then the device is not created either; a device
// the hub refuses leaves no file behind.
func TestDevicesAddOut(t *testing.T) {
	h := newTestHub(t)
	ctx := context.Background()
	hub := []string{"--hub", h.connStr, "--ca", h.caFile}
	out := filepath.Join(t.TempDir(), "dev1.connstr")
	want := "HostName=" + h.host() + ";DeviceId=dev1;SharedAccessKey=" + testDevKey + "\n"

	stdout, stderr, err := tether(t, ctx, append(hub, "devices", "add", "dev1", "--out", out)...)
	if err != nil {
		t.Fatal(err)
	}
	if stdout != "" || strings.Contains(stderr, testDevKey) || !strings.Contains(stderr, out) {
		t.Errorf("add --out: stdout %q, stderr %q; want nothing on stdout and the file named on stderr", stdout, stderr)
	}
	if b, _ := os.ReadFile(out); string(b) != want {
		t.Errorf("the file holds %q, want %q", b, want)
	}
	if m := fileMode(t, out); m != 0o600 {
		t.Errorf("the file's mode is %04o, want 0600", m)
	}

	_, _, err = tether(t, ctx, append(hub, "devices", "add", "dev2", "--out", out)...)
	if err == nil || !strings.Contains(err.Error(), out+" exists") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("add --out over a file: err = %v, want it to say the file exists and --force", err)
	}
	if h.devices["dev2"] {
		t.Error("dev2 was created although its key had nowhere to go")
	}
	if b, _ := os.ReadFile(out); string(b) != want {
		t.Errorf("the refused add changed the file: %q", b)
	}

	// --force replaces it, and the new file is 0600 whatever the old was.
	os.Chmod(out, 0o644)
	if _, _, err := tether(t, ctx, append(hub, "devices", "add", "dev2", "--out", out, "--force")...); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), "DeviceId=dev2;") {
		t.Errorf("--force left %q", b)
	}
	if m := fileMode(t, out); m != 0o600 {
		t.Errorf("after --force the mode is %04o, want 0600", m)
	}

	// The hub refuses (dev1 exists): no file is left behind.
	other := filepath.Join(t.TempDir(), "again.connstr")
	if _, _, err := tether(t, ctx, append(hub, "devices", "add", "dev1", "--out", other)...); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("add of an existing device: %v", err)
	}
	if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused add left %s: %v", other, err)
	}
	// --force alone means nothing: refused before the hub is asked.
	if _, _, err := tether(t, ctx, append(hub, "devices", "add", "dev3", "--force")...); err == nil || !strings.Contains(err.Error(), "--force goes with --out") || h.devices["dev3"] {
		t.Errorf("--force without --out: err = %v, dev3 created: %v", err, h.devices["dev3"])
	}
	// A folder that does not exist: refused before the hub is asked.
	if _, _, err := tether(t, ctx, append(hub, "devices", "add", "dev3", "--out", filepath.Join(other, "x"))...); err == nil || !strings.Contains(err.Error(), "--out") || h.devices["dev3"] {
		t.Errorf("--out into no folder: err = %v, dev3 created: %v", err, h.devices["dev3"])
	}
}

// TestDevicesAddTerminalHint: without --out, a connection string written
// to a terminal (a character device) gets a word on stderr about --out;
// written to a pipe or file, as scripts take it, nothing.
func TestDevicesAddTerminalHint(t *testing.T) {
	h := newTestHub(t)
	t.Setenv("TETHER_HUB", h.connStr)
	t.Setenv("TETHER_CA", h.caFile)
	ctx := context.Background()
	tty, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var stderr bytes.Buffer
	if err := run(ctx, []string{"devices", "add", "dev1"}, tty, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "--out FILE") {
		t.Errorf("to a character device: stderr %q, want the hint", stderr.String())
	}
	var stdout bytes.Buffer
	stderr.Reset()
	if err := run(ctx, []string{"devices", "add", "dev2"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if stderr.Len() != 0 || !strings.Contains(stdout.String(), "DeviceId=dev2;") {
		t.Errorf("to a pipe: stdout %q, stderr %q; want the string alone", stdout.String(), stderr.String())
	}
}

// TestDevicesShowHidesKeys: show and list --json leave the keys out
// unless --show-keys.
func TestDevicesShowHidesKeys(t *testing.T) {
	h := newTestHub(t)
	h.devices["dev1"] = true
	ctx := context.Background()
	hub := []string{"--hub", h.connStr, "--ca", h.caFile}
	for _, tc := range []struct {
		args []string
		keys bool
	}{
		{[]string{"devices", "show", "dev1"}, false},
		{[]string{"devices", "show", "dev1", "--show-keys"}, true},
		{[]string{"devices", "list", "--json"}, false},
		{[]string{"devices", "list", "--json", "--show-keys"}, true},
	} {
		out, _, err := tether(t, ctx, append(hub, tc.args...)...)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		var d wire.Device
		if tc.args[1] == "list" {
			var ds []wire.Device
			if err := json.Unmarshal([]byte(out), &ds); err != nil || len(ds) != 1 {
				t.Fatalf("%q: %v\n%s", tc.args, err, out)
			}
			d = ds[0]
		} else if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("%q: %v\n%s", tc.args, err, out)
		}
		if shown := strings.Contains(out, testDevKey); shown != tc.keys || d.DeviceID != "dev1" || d.Authentication.Type != "sas" {
			t.Errorf("%q: key shown %v, want %v:\n%s", tc.args, shown, tc.keys, out)
		}
	}
	if _, _, err := tether(t, ctx, append(hub, "devices", "list", "--show-keys")...); err == nil || !strings.Contains(err.Error(), "--json") {
		t.Errorf("list --show-keys without --json: %v", err)
	}
}

// TestDeployedAgentReadsItsCredential: deploy/'s agent unit hands the
// device's connection string over as systemd's credential, which the
// agent reads through TETHER_DEVICE_FILE next to deploy/agent.toml, and
// keeps it out of the environment.
func TestDeployedAgentReadsItsCredential(t *testing.T) {
	unit, err := os.ReadFile("../../deploy/tether-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	var creds []string
	for line := range strings.Lines(string(unit)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "EnvironmentFile="):
			t.Errorf("the unit reads an environment file (%s): the key belongs in its credential", line)
		case strings.HasPrefix(line, "LoadCredential="):
			creds = append(creds, strings.TrimPrefix(line, "LoadCredential="))
		case strings.HasPrefix(line, "Environment="):
			k, v, _ := strings.Cut(strings.TrimPrefix(line, "Environment="), "=")
			env[k] = v
		}
	}
	if len(creds) != 1 || !strings.HasPrefix(creds[0], "device.connstr:/etc/tether/") || env["TETHER_DEVICE_FILE"] != "%d/device.connstr" {
		t.Fatalf("the unit's credential %q and TETHER_DEVICE_FILE %q do not match", creds, env["TETHER_DEVICE_FILE"])
	}

	// What systemd does: a copy in the credentials folder (%d), readable
	// by the service's user through an ACL, which shows as 0440.
	dir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	const cs = "HostName=hub.example.com;DeviceId=dev1;SharedAccessKey=ZGV2"
	if err := os.WriteFile(filepath.Join(dir, "device.connstr"), []byte(cs+"\n"), 0o440); err != nil {
		t.Fatal(err)
	}
	file := strings.ReplaceAll(env["TETHER_DEVICE_FILE"], "%d", dir)
	cfg, err := resolve(t, []string{"--config", "../../deploy/agent.toml"}, "", map[string]string{"TETHER_DEVICE_FILE": file})
	if err != nil || cfg.Device != cs || len(cfg.Allow) == 0 {
		t.Errorf("the deployed agent's settings: %+v, %v", cfg, err)
	}
}
