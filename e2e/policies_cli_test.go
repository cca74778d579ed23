package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// TestPolicyCommands runs tether policies against tetherd, both as built:
// the owner lists, shows, adds, rotates and removes policies, and each
// connection string it hands out does what its rights allow and no more.
func TestPolicyCommands(t *testing.T) {
	t.Parallel()
	h := startProcHub(t)
	// run runs tether with the owner's environment, or with connStr as
	// TETHER_HUB when one is given.
	run := func(connStr string, args ...string) (stdout, stderr string, err error) {
		t.Helper()
		env := h.env
		if connStr != "" {
			env = append(append([]string(nil), h.env...), "TETHER_HUB="+connStr)
		}
		return runCmd(t, env, h.tether, args...)
	}
	must := func(connStr string, args ...string) string {
		t.Helper()
		out, stderr, err := run(connStr, args...)
		if err != nil {
			t.Fatalf("tether %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return out
	}
	refused := func(connStr, want string, args ...string) {
		t.Helper()
		out, stderr, err := run(connStr, args...)
		if err == nil || !strings.Contains(stderr, want) {
			t.Errorf("tether %s: %v, stdout %q, stderr %q; want a failure saying %q", strings.Join(args, " "), err, out, stderr, want)
		}
	}
	ownerCS, err := sas.ParseConnectionString(strings.TrimPrefix(h.env[0], "TETHER_HUB="))
	if err != nil {
		t.Fatal(err)
	}

	out := must("", "policies", "list")
	for _, line := range []string{
		"iothubowner        RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect",
		"registryRead       RegistryRead",
		"registryReadWrite  RegistryRead, RegistryWrite",
		"service            ServiceConnect",
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("policies list lacks %q:\n%s", line, out)
		}
	}
	var list []wire.AccessPolicy
	if err := json.Unmarshal([]byte(must("", "policies", "list", "--json")), &list); err != nil || len(list) != 4 {
		t.Fatalf("policies list --json: %v %+v", err, list)
	}
	for _, p := range list {
		if p.PrimaryKey != "" || p.SecondaryKey != "" {
			t.Errorf("policies list --json shows keys of %s", p.KeyName)
		}
	}
	if strings.Contains(out, ownerCS.SharedAccessKey) {
		t.Error("policies list printed the owner's key")
	}

	// The service policy's connection string opens streams (the device
	// is offline: the hub took the call), and reads no registry.
	service := strings.TrimSpace(must("", "policies", "show", "service"))
	cs, err := sas.ParseConnectionString(service)
	if err != nil || cs.SharedAccessKeyName != "service" || cs.HostName != ownerCS.HostName || cs.SharedAccessKey == "" {
		t.Fatalf("policies show service: %q (%v)", service, err)
	}
	must("", "devices", "add", "dev1")
	refused(service, `device "dev1" is not connected`, "pipe", "dev1", "ssh")
	refused(service, "unauthorized", "devices", "list")
	refused(service, "owner policy", "policies", "list")
	if second := strings.TrimSpace(must("", "policies", "show", "service", "--secondary")); second == service || !strings.Contains(second, "SharedAccessKeyName=service;") {
		t.Errorf("policies show service --secondary: %q", second)
	}

	// A policy of chosen rights.
	ops := strings.TrimSpace(must("", "policies", "add", "ops", "--rights", "RegistryRead,RegistryWrite"))
	if !strings.Contains(ops, "SharedAccessKeyName=ops;") {
		t.Fatalf("policies add printed %q", ops)
	}
	if !strings.Contains(must("", "policies", "list"), "ops                RegistryRead, RegistryWrite\n") {
		t.Error("policies list does not show ops")
	}
	must(ops, "devices", "add", "dev2")
	refused(ops, "unauthorized", "pipe", "dev2", "ssh")
	refused("", `policy "ops" already exists`, "policies", "add", "ops", "--rights", "ServiceConnect")

	// Rotation: the printed string works, the old one no longer.
	rotated := strings.TrimSpace(must("", "policies", "rotate-key", "ops"))
	if rotated == ops || !strings.Contains(rotated, "SharedAccessKeyName=ops;") {
		t.Fatalf("policies rotate-key printed %q", rotated)
	}
	refused(ops, "unauthorized", "devices", "list")
	if !strings.Contains(must(rotated, "devices", "list"), "dev2") {
		t.Error("the rotated key cannot list devices")
	}
	if got := strings.TrimSpace(must("", "policies", "show", "ops")); got != rotated {
		t.Errorf("policies show ops = %q, want the rotated %q", got, rotated)
	}
	secondary := strings.TrimSpace(must("", "policies", "rotate-key", "ops", "--secondary"))
	must(secondary, "devices", "list")
	must(rotated, "devices", "list") // the other key is untouched

	// Removal.
	must("", "policies", "rm", "ops")
	refused(rotated, "unauthorized", "devices", "list")
	refused("", `policy "ops" not found`, "policies", "show", "ops")

	// What the hub refuses, said in words.
	refused("", "owner policy", "policies", "rm", "iothubowner")
	refused("", `unknown right "Admin"`, "policies", "add", "x", "--rights", "Admin")
	refused("", "needs --rights", "policies", "add", "x")
	refused("", "policy name", "policies", "add", "a;b", "--rights", "ServiceConnect")
	refused("", "did you mean list", "policies", "lst")
	if !strings.Contains(must("", "policies", "list"), "iothubowner") {
		t.Error("the owner policy is gone")
	}
}

// TestPolicyCommandsOut: show, add and rotate-key --out write the
// connection string to a new file of mode 0600 and none to stdout; an
// existing file stops add and rotate-key before the hub is asked (no key
// made with nowhere to go), --force replaces it, and the key in each file
// is the one the hub holds.
func TestPolicyCommandsOut(t *testing.T) {
	t.Parallel()
	h := startProcHub(t)
	dir := t.TempDir()
	run := func(args ...string) (string, string, error) {
		t.Helper()
		return runCmd(t, h.env, h.tether, args...)
	}
	read := func(path string) sas.ConnectionString {
		t.Helper()
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", path, st.Mode().Perm())
		}
		b, _ := os.ReadFile(path)
		cs, err := sas.ParseConnectionString(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return cs
	}

	added := filepath.Join(dir, "ops.connstr")
	stdout, stderr, err := run("policies", "add", "ops", "--rights", "ServiceConnect", "--out", added)
	if err != nil {
		t.Fatalf("policies add --out: %v\n%s", err, stderr)
	}
	cs := read(added)
	if stdout != "" || strings.Contains(stderr, cs.SharedAccessKey) || !strings.Contains(stderr, "policy ops's connection string is in "+added) {
		t.Errorf("policies add --out: stdout %q, stderr %q; want nothing on stdout and the file named", stdout, stderr)
	}
	if cs.SharedAccessKeyName != "ops" {
		t.Errorf("the file names policy %q", cs.SharedAccessKeyName)
	}

	shown := filepath.Join(dir, "shown.connstr")
	if _, stderr, err := run("policies", "show", "ops", "--out", shown); err != nil {
		t.Fatalf("policies show --out: %v\n%s", err, stderr)
	}
	if got := read(shown); got.SharedAccessKey != cs.SharedAccessKey {
		t.Error("policies show --out wrote another key than add made")
	}

	// rotate-key onto an existing file: refused before the hub is asked,
	// so the key in it still works.
	if _, stderr, err := run("policies", "rotate-key", "ops", "--out", added); err == nil || !strings.Contains(stderr, "--force") {
		t.Errorf("rotate-key --out over a file: %v, %q; want a refusal naming --force", err, stderr)
	}
	if _, stderr, err := run("policies", "show", "ops", "--out", filepath.Join(dir, "again.connstr")); err != nil {
		t.Fatal(err, stderr)
	} else if read(filepath.Join(dir, "again.connstr")).SharedAccessKey != cs.SharedAccessKey {
		t.Error("a refused rotate-key rotated the key")
	}
	if _, stderr, err := run("policies", "rotate-key", "ops", "--force"); err == nil || !strings.Contains(stderr, "--force goes with --out") {
		t.Errorf("--force alone: %v, %q", err, stderr)
	}
	if _, stderr, err := run("policies", "rotate-key", "ops", "--out", added, "--force"); err != nil {
		t.Fatalf("rotate-key --out --force: %v\n%s", err, stderr)
	}
	rotated := read(added)
	if rotated.SharedAccessKey == cs.SharedAccessKey {
		t.Error("rotate-key --force left the old key in the file")
	}
	if _, stderr, err := run("policies", "show", "ops", "--out", shown, "--force"); err != nil {
		t.Fatal(err, stderr)
	} else if read(shown).SharedAccessKey != rotated.SharedAccessKey {
		t.Error("the key rotate-key wrote is not the hub's")
	}
}
