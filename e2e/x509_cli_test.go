package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/wire"
)

// writeCertFiles writes c's chain and key as PEM files and returns their
// paths, as a device would hold them.
func writeCertFiles(t *testing.T, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	var certPEM []byte
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "device.pem"), filepath.Join(dir, "device-key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestX509CLI: the X.509 set-up of the guide through the real binaries:
// devices add --x509-thumbprint and --x509-ca, certificates add, list,
// show and rm, and the agent with --cert and --key carrying a stream.
func TestX509CLI(t *testing.T) {
	t.Parallel()
	h := startProcHub(t)
	run := func(args ...string) string {
		t.Helper()
		out, stderr, err := runCmd(t, h.env, h.tether, args...)
		if err != nil {
			t.Fatalf("tether %v: %v: %s", args, err, stderr)
		}
		return strings.TrimSpace(out)
	}
	fails := func(want string, args ...string) {
		t.Helper()
		_, stderr, err := runCmd(t, h.env, h.tether, args...)
		if err == nil || !strings.Contains(stderr, want) {
			t.Fatalf("tether %v: %v, stderr %q; want a failure mentioning %q", args, err, stderr, want)
		}
	}

	// selfSigned, the thumbprint as openssl prints it.
	cert := validCert(t, "cam1", nil)
	certFile, keyFile := writeCertFiles(t, cert)
	cs := run("devices", "add", "cam1", "--x509-thumbprint", fingerprint(cert))
	if !strings.HasPrefix(cs, "HostName=") || !strings.HasSuffix(cs, ";DeviceId=cam1;x509=true") {
		t.Fatalf("devices add --x509-thumbprint printed %q", cs)
	}
	var d wire.Device
	if err := json.Unmarshal([]byte(run("devices", "show", "cam1")), &d); err != nil {
		t.Fatal(err)
	}
	want := strings.ToLower(strings.ReplaceAll(fingerprint(cert), ":", ""))
	if d.Authentication.Type != wire.AuthSelfSigned || d.Authentication.X509Thumbprint == nil ||
		d.Authentication.X509Thumbprint.PrimaryThumbprint == nil || *d.Authentication.X509Thumbprint.PrimaryThumbprint != want {
		t.Fatalf("devices show: %+v", d.Authentication)
	}
	fails("not a SHA-256 fingerprint", "devices", "add", "cam2", "--x509-thumbprint", "12:34")
	fails("exclude each other", "devices", "add", "cam2", "--x509-thumbprint", want, "--x509-ca")

	echoAddr := startEcho(t)
	agent := startProc(t, h.env, h.tether, "agent", "--device", cs, "--cert", certFile, "--key", keyFile, "--allow", "echo="+echoAddr)
	waitConnected(t, h.env, h.tether, "cam1")
	fwd := h.startForward(t, "cam1", "echo")
	c, err := net.Dial("tcp", fwd)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	msg := "through a certificate device"
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q %v", buf, err)
	}
	c.Close()
	if err := agent.stop(t); err != nil {
		t.Errorf("agent exited with %v after SIGTERM", err)
	}

	// certificateAuthority: upload the CA, add the device, connect.
	ca := newTestCA(t, "Fleet Root", nil)
	caFile := filepath.Join(t.TempDir(), "fleet-ca.pem")
	if err := os.WriteFile(caFile, []byte(ca.pem), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := run("certificates", "add", "fleet", caFile); !strings.Contains(out, "fleet") || !strings.Contains(out, "CN=Fleet Root") {
		t.Fatalf("certificates add printed %q", out)
	}
	if out := run("certificates", "list"); !strings.Contains(out, "fleet") || !strings.Contains(out, "CN=Fleet Root") {
		t.Fatalf("certificates list printed %q", out)
	}
	var shown wire.CACertificate
	if err := json.Unmarshal([]byte(run("certificates", "show", "fleet")), &shown); err != nil || shown.Certificate == "" {
		t.Fatalf("certificates show: %+v %v", shown, err)
	}
	gwCS := run("devices", "add", "gw1", "--x509-ca")
	if !strings.HasSuffix(gwCS, ";DeviceId=gw1;x509=true") {
		t.Fatalf("devices add --x509-ca printed %q", gwCS)
	}
	gwCert, gwKey := writeCertFiles(t, validCert(t, "gw1", ca))
	gw := startProc(t, h.env, h.tether, "agent", "--device", gwCS, "--cert", gwCert, "--key", gwKey, "--allow", "echo="+echoAddr)
	waitConnected(t, h.env, h.tether, "gw1")
	if err := gw.stop(t); err != nil {
		t.Errorf("agent exited with %v after SIGTERM", err)
	}

	run("certificates", "rm", "fleet")
	if out := run("certificates", "list"); out != "" {
		t.Fatalf("certificates list after rm printed %q", out)
	}
	fails("not found", "certificates", "rm", "fleet")
	fails("not a CA certificate", "certificates", "add", "leaf", certFile)

	// With its CA gone the device is refused: the agent says so and exits.
	_, stderr, err := runCmd(t, h.env, h.tether, "agent", "--device", gwCS, "--cert", gwCert, "--key", gwKey, "--allow", "echo="+echoAddr)
	if err == nil || !strings.Contains(stderr, "refused") {
		t.Fatalf("agent after its CA was removed: %v, stderr %q", err, stderr)
	}
}
