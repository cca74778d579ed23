package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain points tether's config file at an empty folder: a login of the
// developer's own must not reach the tests, nor a test's login them.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-config-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// configHome gives the test a config folder of its own, no hub in the
// environment, and returns where tether login writes.
func configHome(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("TETHER_HUB", "")
	t.Setenv("TETHER_CA", "")
	return filepath.Join(dir, "tether", "config.toml")
}

// login runs tether login with stdin.
func login(t *testing.T, stdin string, args ...string) (stderr string, err error) {
	t.Helper()
	old := loginStdin
	loginStdin = strings.NewReader(stdin)
	defer func() { loginStdin = old }()
	_, stderr, err = runCLI(context.Background(), append([]string{"login"}, args...)...)
	return stderr, err
}

func fileMode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// TestLoginThenCommands: tether login - writes the config file, 0600,
// with the CA as an absolute path; the commands then reach the hub with
// nothing in the environment or on the command line, until the file is
// readable by others (refused, saying how to fix it) or gone (logout).
func TestLoginThenCommands(t *testing.T) {
	h := newTestHub(t)
	h.devices["dev1"] = true
	h.accept = true
	path := configHome(t)
	// The CA by a relative path, as a user in its folder gives it.
	t.Chdir(filepath.Dir(h.caFile))

	stderr, err := login(t, h.connStr+"\n", "-", "--ca", filepath.Base(h.caFile))
	if err != nil {
		t.Fatalf("login: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "logged in to hub "+h.host()+" as iothubowner") || strings.Contains(stderr, testPolicyKey) {
		t.Errorf("login said %q", stderr)
	}
	if m := fileMode(t, path); m != 0o600 {
		t.Errorf("config file mode %04o, want 0600", m)
	}
	c, err := loadCLIConfig(path)
	if err != nil || c.Hub != h.connStr || c.CA != h.caFile {
		t.Fatalf("config file holds %+v (%v), want hub %q and ca %q", c, err, h.connStr, h.caFile)
	}

	ctx := context.Background()
	t.Chdir(t.TempDir()) // the CA is found from anywhere
	if _, _, err := runCLI(ctx, "devices", "add", "dev2"); err != nil {
		t.Fatalf("devices add with the login alone: %v", err)
	}
	if !h.devices["dev2"] {
		t.Error("dev2 did not reach the hub")
	}
	if out, _, err := runCLI(ctx, "endpoints"); err != nil || !strings.Contains(out, h.host()) {
		t.Errorf("endpoints with the login alone: %q, %v", out, err)
	}
	p := startPipe(t, ctx, "dev1", "echo")
	go p.stdin.Write([]byte("bye"))
	if got, err := io.ReadAll(p.stdout); err != nil || string(got) != "bye" {
		t.Errorf("pipe with the login alone: stdout %q, %v; stderr %s", got, err, p.stderr)
	}
	if err := p.wait(t); err != nil {
		t.Errorf("pipe with the login alone: %v", err)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = runCLI(ctx, "devices", "list")
	for _, want := range []string{path + " is mode 0644", "every other user can read it", "chmod 600 " + path} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config file 0644: err = %v, want it to say %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), testPolicyKey) {
		t.Errorf("the refusal shows the key: %v", err)
	}
	os.Chmod(path, 0o600)

	if _, stderr, err := runCLI(ctx, "logout"); err != nil || !strings.Contains(stderr, "removed "+path) {
		t.Errorf("logout: %v, %q", err, stderr)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after logout the file is still there: %v", err)
	}
	if _, _, err := runCLI(ctx, "devices", "list"); err == nil || !strings.Contains(err.Error(), "tether login") {
		t.Errorf("after logout: err = %v, want no hub, and tether login named", err)
	}
	if _, stderr, err := runCLI(ctx, "logout"); err != nil || !strings.Contains(stderr, "not logged in") {
		t.Errorf("second logout: %v, %q", err, stderr)
	}
}

// TestLoginRefusals: a connection string the hub refuses, one that is
// not a service's, nothing on stdin, no argument: each is an error that
// shows no key, and an earlier login stays as it was.
func TestLoginRefusals(t *testing.T) {
	h := newTestHub(t)
	path := configHome(t)
	if stderr, err := login(t, h.connStr, "-", "--ca", h.caFile); err != nil {
		t.Fatalf("login: %v\n%s", err, stderr)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := "HostName=" + h.host() + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + testDevKey
	device := "HostName=" + h.host() + ";DeviceId=dev1;SharedAccessKey=" + testDevKey
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{wrongKey, []string{"-", "--ca", h.caFile}, "unauthorized"},
		{h.connStr, []string{"-"}, "certificate not trusted"},
		{device, []string{"-", "--ca", h.caFile}, "a device's connection string"},
		{"", []string{"-", "--ca", h.caFile}, "stdin is empty"},
		{h.connStr + "\n" + h.connStr, []string{"-", "--ca", h.caFile}, "more than one line"},
		{"", nil, "tether login - < FILE"},
		{"", []string{"a", "b"}, "tether login - < FILE"},
	} {
		stderr, err := login(t, tc.stdin, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("login %q with %.20q on stdin: err = %v, want %q", tc.args, tc.stdin, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error()+stderr, testDevKey) {
			t.Errorf("login %q: the key shows: %v\n%s", tc.args, err, stderr)
		}
		if now, _ := os.ReadFile(path); string(now) != string(before) {
			t.Fatalf("login %q that failed changed the config file", tc.args)
		}
	}

	// Given as an argument it works, with a word about ps.
	stderr, err := login(t, "", h.connStr, "--ca", h.caFile)
	if err != nil || !strings.Contains(stderr, "shows in ps") {
		t.Errorf("login CONNSTR: %v, %q", err, stderr)
	}
}

// TestLoginPrecedence: a flag wins over the environment, which wins over
// the config file, for the hub and for the CA, each on its own.
func TestLoginPrecedence(t *testing.T) {
	fileHub, envHub, flagHub := newTestHub(t), newTestHub(t), newTestHub(t)
	configHome(t)
	if stderr, err := login(t, fileHub.connStr, "-", "--ca", fileHub.caFile); err != nil {
		t.Fatalf("login: %v\n%s", err, stderr)
	}
	ctx := context.Background()
	add := func(id string, args ...string) error {
		_, _, err := runCLI(ctx, append(args, "devices", "add", id)...)
		return err
	}
	if err := add("from-file"); err != nil || !fileHub.devices["from-file"] {
		t.Errorf("the file alone: %v, reached the file's hub: %v", err, fileHub.devices["from-file"])
	}
	t.Setenv("TETHER_HUB", envHub.connStr)
	if err := add("from-env"); err != nil || !envHub.devices["from-env"] || fileHub.devices["from-env"] {
		t.Errorf("TETHER_HUB over the file: %v; env's hub %v, file's hub %v", err, envHub.devices["from-env"], fileHub.devices["from-env"])
	}
	if err := add("from-flag", "--hub", flagHub.connStr); err != nil || !flagHub.devices["from-flag"] || envHub.devices["from-flag"] {
		t.Errorf("--hub over TETHER_HUB: %v; flag's hub %v, env's hub %v", err, flagHub.devices["from-flag"], envHub.devices["from-flag"])
	}

	// The CA: the file's serves the env's hub (the test hubs share a
	// certificate); a CA in the environment replaces it, a flag replaces
	// that.
	missing := filepath.Join(t.TempDir(), "missing.pem")
	t.Setenv("TETHER_CA", missing)
	if err := add("ca-env"); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("TETHER_CA over the file: err = %v, want the missing %s", err, missing)
	}
	if err := add("ca-flag", "--ca", envHub.caFile); err != nil {
		t.Errorf("--ca over TETHER_CA: %v", err)
	}
	// A CA from the file that is gone is named as the file's.
	t.Setenv("TETHER_CA", "")
	os.Remove(fileHub.caFile)
	if err := add("ca-gone"); err == nil || !strings.Contains(err.Error(), "ca in ") || !strings.Contains(err.Error(), "config.toml") {
		t.Errorf("the file's CA gone: err = %v, want it to name the file's ca", err)
	}
}

// TestConfigFileErrors: a config file tether cannot use is an error that
// names the file and the line or key, never a value.
func TestConfigFileErrors(t *testing.T) {
	path := configHome(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ text, want string }{
		{"hub = \"HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + testPolicyKey + "\"\nhbu = \"x\"\n", `unknown key "hbu" (known: hub, ca)`},
		{"hub = HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + testPolicyKey + "\n", "line 1: not valid TOML"},
		{"ca = \"/ca.pem\"\nhub = " + testPolicyKey + "\n", `line 2: not valid TOML (after key "hub")`},
		{"hub = \"HostName=h;DeviceId=d;SharedAccessKey=" + testPolicyKey + "\"\n", "hub in " + path + ": sas: bad connection string"},
	} {
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := runCLI(context.Background(), "devices", "list")
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), testPolicyKey) {
			t.Errorf("config %q: err = %v, want %q and no key", tc.text, err, tc.want)
		}
	}
	// A relative ca is the config folder's.
	if err := os.WriteFile(path, []byte("ca = \"ca.pem\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadCLIConfig(path)
	if err != nil || c.CA != filepath.Join(filepath.Dir(path), "ca.pem") {
		t.Errorf("relative ca: %+v, %v", c, err)
	}
}
