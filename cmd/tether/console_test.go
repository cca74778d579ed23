package main

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/sas"
)

const consoleTestKey = "c2VjcmV0LWtleS1vZi10aGUtdGVzdC1wb2xpY3k="

// TestConsoleLink: the link is https://HOST/console/ with the token in
// the fragment alone, where the browser's decodeURIComponent gives back
// a token that verifies with the policy's key and expires after --ttl.
func TestConsoleLink(t *testing.T) {
	configHome(t)
	t.Setenv("DISPLAY", "")
	t.Setenv("WAYLAND_DISPLAY", "")
	t.Setenv("TETHER_HUB", "HostName=hub.example:8443;SharedAccessKeyName=registryRead;SharedAccessKey="+consoleTestKey)
	stdout, stderr, err := runCLI(context.Background(), "console", "--ttl", "10m")
	if err != nil || stderr != "" {
		t.Fatalf("tether console: %v, stderr %q", err, stderr)
	}
	link := strings.TrimSpace(stdout)
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "https" || u.Host != "hub.example:8443" || u.Path != "/console/" || u.RawQuery != "" {
		t.Errorf("link %s: want https://hub.example:8443/console/#token=...", link)
	}
	frag, ok := strings.CutPrefix(u.EscapedFragment(), "token=")
	if !ok {
		t.Fatalf("fragment %q", u.EscapedFragment())
	}
	// The console reads it with decodeURIComponent: percent-escapes only.
	raw, err := url.PathUnescape(frag)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.ParseToken(raw)
	if err != nil {
		t.Fatalf("token %q: %v", raw, err)
	}
	if err := tok.Verify(consoleTestKey, time.Now()); err != nil {
		t.Errorf("token does not verify: %v", err)
	}
	if tok.KeyName != "registryRead" || tok.Resource != "hub.example:8443" {
		t.Errorf("token names %q for %q", tok.KeyName, tok.Resource)
	}
	if left := time.Until(tok.Expiry); left < 9*time.Minute || left > 10*time.Minute {
		t.Errorf("token expires in %v, want 10m", left)
	}
}

// TestConsoleOpens: on a desktop the link is printed and handed to
// xdg-open; --no-open prints it only.
func TestConsoleOpens(t *testing.T) {
	configHome(t)
	bin := t.TempDir()
	got := filepath.Join(bin, "opened")
	script := "#!/bin/sh\nprintf '%s' \"$1\" > " + got + ".tmp && mv " + got + ".tmp " + got + "\n"
	if err := os.WriteFile(filepath.Join(bin, "xdg-open"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("DISPLAY", "")
	t.Setenv("WAYLAND_DISPLAY", "wayland-0")
	t.Setenv("TETHER_HUB", "HostName=127.0.0.1:8443;SharedAccessKeyName=iothubowner;SharedAccessKey="+consoleTestKey)

	if _, _, err := runCLI(context.Background(), "console", "--no-open"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(got); err == nil {
		t.Fatal("--no-open opened the link")
	}
	stdout, _, err := runCLI(context.Background(), "console")
	if err != nil {
		t.Fatal(err)
	}
	// xdg-open runs on after tether returns, as it does for a browser.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(got)
		if err == nil {
			if string(b) != strings.TrimSpace(stdout) {
				t.Errorf("xdg-open got %q, printed %q", b, stdout)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("xdg-open was not run")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConsoleRefuses(t *testing.T) {
	configHome(t)
	t.Setenv("DISPLAY", "")
	t.Setenv("WAYLAND_DISPLAY", "")
	for _, tc := range []struct {
		hub  string
		args []string
		want string
	}{
		{"", nil, "no hub given"},
		{"HostName=h;DeviceId=d;SharedAccessKey=" + consoleTestKey, nil, "device's connection string"},
		{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=not base64", nil, "SharedAccessKey is not base64"},
		{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + consoleTestKey, []string{"--ttl", "25h"}, "at most 24h"},
		{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + consoleTestKey, []string{"--ttl", "0s"}, "above 0"},
		{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=" + consoleTestKey, []string{"extra"}, "takes no arguments"},
	} {
		t.Setenv("TETHER_HUB", tc.hub)
		stdout, _, err := runCLI(context.Background(), append([]string{"console"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || stdout != "" {
			t.Errorf("hub %q %q: err %v, stdout %q; want %q and no link", tc.hub, tc.args, err, stdout, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), consoleTestKey) {
			t.Errorf("the error shows the key: %v", err)
		}
	}
}
