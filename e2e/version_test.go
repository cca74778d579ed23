package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/internal/version"
	"github.com/tether-io/tether/wire"
)

// healthzBody is what /healthz answers at https://addr, trusting tlsConf.
func healthzBody(t *testing.T, addr string, tlsConf *tls.Config) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	resp, err := c.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d %q %v", resp.StatusCode, body, err)
	}
	return string(body)
}

// TestVersionReported: the hub says its version in /healthz, after the
// "ok" that has always been the first line, and in tether_build_info;
// the registry shows what each device's connection named itself, the
// SDK's version for Tether's, an Azure SDK's name for one of those, and
// nothing a terminal would obey for one that sends escapes.
func TestVersionReported(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	v := version.Get()

	if got, want := healthzBody(t, h.Addr, h.TLS), "ok\n"+version.Line("tetherd")+"\n"; got != want {
		t.Errorf("/healthz: %q, want %q", got, want)
	}

	ms := httptest.NewServer(h.Server.MetricsHandler())
	defer ms.Close()
	commit := v.Commit
	if commit == "" {
		commit = "unknown"
	}
	if got := value(t, scrape(t, ms.URL), "tether_build_info", "version", v.Version, "commit", commit, "goversion", v.GoVersion); got != 1 {
		t.Errorf("tether_build_info = %v, want 1", got)
	}

	svc := h.service(t)
	h.connectDevice(t, h.addDevice(t, "sdk"), device.TLS)
	dialRaw(t, h, h.addDevice(t, "azure"), "iothubclient/1.3.0-public-preview (native; Linux; x86_64)")
	dialRaw(t, h, h.addDevice(t, "evil"), "evil\x1b]0;owned\x07/1.0")
	h.addDevice(t, "never")
	for id, want := range map[string]string{
		"sdk":   wire.DeviceClientTypeTether + v.Version,
		"azure": "iothubclient/1.3.0-public-preview (native; Linux; x86_64)",
		"evil":  "evil?]0;owned?/1.0",
		"never": "",
	} {
		var d *wire.Device
		eventually(t, 10*time.Second, id+"'s connection in the registry", func() bool {
			var err error
			d, err = svc.GetDevice(context.Background(), id)
			return err == nil && (id == "never" || d.ConnectionState == wire.StateConnected)
		})
		if d.DeviceClientType != want {
			t.Errorf("%s: deviceClientType %q, want %q", id, d.DeviceClientType, want)
		}
	}
}

// A release's version, commit and date, set at link time.
const (
	testVersion = "9.8.7-test"
	testCommit  = "abc1234"
	testBuilt   = "2026-12-06T10:00:00Z"
)

// buildVersioned builds tetherd and tether into dir as a release builds
// them, with testVersion, testCommit and testBuilt set at link time, and
// returns the Go version that built them (which may not be the test's).
func buildVersioned(t *testing.T, dir string) (goVersion string) {
	t.Helper()
	const pkg = "github.com/tether-io/tether/internal/version"
	ldflags := "-X " + pkg + ".Version=" + testVersion + " -X " + pkg + ".Commit=" + testCommit + " -X " + pkg + ".Date=" + testBuilt
	out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", dir+string(filepath.Separator),
		"github.com/tether-io/tether/cmd/tetherd", "github.com/tether-io/tether/cmd/tether").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err = exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// TestVersionCLI builds both binaries as a release does and runs them as
// a user would: tether version and tetherd --version print the version
// set at link time, with the commit, date, Go version and platform;
// tetherd --version starts nothing and touches no data folder; the hub so
// built says that version in /healthz and tether_build_info, and tether
// devices show says which version the agent on each device runs.
func TestVersionCLI(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	goVersion := buildVersioned(t, bin)
	tetherd, tether := filepath.Join(bin, "tetherd"), filepath.Join(bin, "tether")
	build := testVersion + " (commit " + testCommit + ", built " + testBuilt + ", " + goVersion + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")"

	out, stderr, err := runCmd(t, nil, tether, "version")
	if err != nil || out != "tether "+build+"\n" || stderr != "" {
		t.Errorf("tether version: %v\nstdout %q\nstderr %q\nwant stdout %q", err, out, stderr, "tether "+build+"\n")
	}
	if _, _, err := runCmd(t, nil, tether, "version", "extra"); err == nil {
		t.Error("tether version extra: no error")
	}
	data := filepath.Join(t.TempDir(), "data")
	// A variable that would fail a start does not keep --version from
	// answering.
	out, stderr, err = runCmd(t, []string{"TETHER_TLS=flase"}, tetherd, "--data", data, "--version")
	if err != nil || out != "tetherd "+build+"\n" || stderr != "" {
		t.Errorf("tetherd --version: %v\nstdout %q\nstderr %q\nwant stdout %q", err, out, stderr, "tetherd "+build+"\n")
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tetherd --version touched its data folder (%v)", err)
	}

	metrics := freePort(t)
	h := startProcHubOf(t, tetherd, tether, "--metrics-listen", metrics)
	if got, want := healthzBody(t, h.addr, &tls.Config{RootCAs: caPool(h.dir)}), "ok\ntetherd "+build+"\n"; got != want {
		t.Errorf("/healthz: %q, want %q", got, want)
	}
	if got := value(t, scrape(t, "http://"+metrics+"/metrics"), "tether_build_info", "version", testVersion, "commit", testCommit, "goversion", goVersion); got != 1 {
		t.Errorf("tether_build_info = %v, want 1", got)
	}

	h.startAgent(t, "dev1", "echo="+startEcho(t))
	out, stderr, err = runCmd(t, h.env, tether, "devices", "show", "dev1")
	if err != nil {
		t.Fatalf("devices show dev1: %v: %s", err, stderr)
	}
	var d wire.Device
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("devices show dev1: %v\n%s", err, out)
	}
	if want := wire.DeviceClientTypeTether + testVersion; d.DeviceClientType != want {
		t.Errorf("devices show dev1: deviceClientType %q, want %q\n%s", d.DeviceClientType, want, out)
	}
}
