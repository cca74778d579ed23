package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/sas"
)

// The CLI, run as a user runs it, names the cause of a certificate
// failure and its fix in its own flags: a hub name the certificate does
// not hold (with the names it does), the agent's certificate file, never
// an SDK's Options field.
func TestCertificateMessagesCLI(t *testing.T) {
	t.Parallel()
	h := startProcHub(t) // its certificate holds 127.0.0.1 only
	owner, err := sas.ParseConnectionString(strings.TrimPrefix(h.env[0], "TETHER_HUB="))
	if err != nil {
		t.Fatal(err)
	}
	addr := owner.HostName
	byName := "localhost" + addr[strings.LastIndexByte(addr, ':'):]
	owner.HostName = byName
	wrongName := []string{"TETHER_HUB=" + owner.String(), h.env[1]}
	devStr, stderr, err := runCmd(t, h.env, h.tether, "devices", "add", "dev1")
	if err != nil {
		t.Fatalf("devices add: %v: %s", err, stderr)
	}
	dev, err := sas.ParseConnectionString(strings.TrimSpace(devStr))
	if err != nil {
		t.Fatal(err)
	}
	dev.HostName = byName

	names := `hub ` + byName + `: name "localhost" not in the certificate, which holds 127.0.0.1: connect with one of those names`
	cert, key := writeCertFiles(t, validCert(t, "cam9", nil))
	expCert, expKey := writeCertFiles(t, deviceCert(t, "cam1", nil, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)))
	x509Dev := "HostName=" + addr + ";DeviceId=cam1;x509=true"
	allow := []string{"--allow", "ssh=" + deadAddr(t)}

	for _, tc := range []struct {
		what string
		env  []string
		args []string
		want string
	}{
		{"devices list by another name", wrongName, []string{"devices", "list"}, names},
		{"pipe by another name", wrongName, []string{"pipe", "dev1", "ssh"}, names},
		{"agent by another name", h.env, append([]string{"agent", "--device", dev.String()}, allow...), names},
		{"agent without the CA", h.env[:1], append([]string{"agent", "--device", strings.TrimSpace(devStr)}, allow...),
			"certificate not trusted: pass --ca FILE (or set TETHER_CA)"},
		{"x509 agent without a certificate", h.env, append([]string{"agent", "--device", x509Dev}, allow...),
			"the connection string says x509=true: give the device's certificate and its key with --cert FILE --key FILE"},
		{"x509 agent with another device's certificate", h.env, append([]string{"agent", "--device", x509Dev, "--cert", cert, "--key", key}, allow...),
			"--cert " + cert + `: the certificate's subject CN is "cam9", not the device ID "cam1"`},
		{"x509 agent with an expired certificate", h.env, append([]string{"agent", "--device", x509Dev, "--cert", expCert, "--key", expKey}, allow...),
			"--cert " + expCert + ": the certificate expired at "},
	} {
		// TETHER_CA= clears the CA the test's own environment may hold.
		env := append([]string{"TETHER_CA="}, tc.env...)
		r := runTool(t, time.Minute, env, strings.NewReader(""), h.tether, tc.args...)
		t.Logf("%s: %s", tc.what, r.stderr)
		if r.err == nil || !strings.Contains(string(r.stderr), tc.want) {
			t.Errorf("%s: %v, stderr %q; want a failure saying %q", tc.what, r.err, r.stderr, tc.want)
		}
		if strings.Contains(string(r.stderr), "Options.") {
			t.Errorf("%s: the CLI names an SDK field: %q", tc.what, r.stderr)
		}
	}
}
