package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/device/devicetest"
	"github.com/tether-io/tether/internal/cliflag"
)

// writeConfig writes an agent config file, mode 0600, and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// resolve parses args as the agent's flags and resolves them against env
// (a fake environment) and ca (the global --ca).
func resolve(t *testing.T, args []string, ca string, env map[string]string) (*agentConfig, error) {
	t.Helper()
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fl := addAgentFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	fl.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { fl.set[f.Name] = true })
	return resolveAgentConfig(fl, ca, func(k string) string { return env[k] })
}

const fullConfig = `# every key
device = "HostName=file.example;DeviceId=dev1;SharedAccessKey=ZmlsZQ=="
ca = "/etc/tether/ca.pem"
transport = "tls"
mqtt_addr = "file.example:8883"
keepalive = "7s"
log_format = "json"
log_level = "warn"

[allow]
ssh = "127.0.0.1:22"
web = "127.0.0.1:80"
`

func TestAgentConfigDefaults(t *testing.T) {
	cfg, err := resolve(t, nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Transport != "ws" || cfg.KeepAlive != 20*time.Second || cfg.LogFormat != "text" || cfg.LogLevel != slog.LevelInfo ||
		cfg.Device != "" || cfg.CA != "" || cfg.MQTTAddr != "" || len(cfg.Allow) != 0 || cfg.File != "" {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestAgentConfigFile(t *testing.T) {
	path := writeConfig(t, fullConfig)
	cfg, err := resolve(t, []string{"--config", path}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := agentConfig{
		Device: "HostName=file.example;DeviceId=dev1;SharedAccessKey=ZmlsZQ==", CA: "/etc/tether/ca.pem",
		Transport: "tls", MQTTAddr: "file.example:8883", KeepAlive: 7 * time.Second,
		LogFormat: "json", LogLevel: slog.LevelWarn, File: path, DeviceFrom: "device in " + path,
		Shell: shellConfig{Idle: 30 * time.Minute, Max: 12 * time.Hour},
	}
	got := *cfg
	got.Allow = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if s := cfg.Allow.String(); s != "ssh=127.0.0.1:22,web=127.0.0.1:80" {
		t.Errorf("allow = %s", s)
	}

	// TETHER_CONFIG names the file too.
	cfg, err = resolve(t, nil, "", map[string]string{"TETHER_CONFIG": path})
	if err != nil || cfg.Transport != "tls" {
		t.Errorf("TETHER_CONFIG: %+v, %v", cfg, err)
	}
}

func TestAgentConfigAllowArray(t *testing.T) {
	path := writeConfig(t, `allow = ["ssh=127.0.0.1:22", "vnc=127.0.0.1:5900"]`)
	cfg, err := resolve(t, []string{"--config", path}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Allow.String(); s != "ssh=127.0.0.1:22,vnc=127.0.0.1:5900" {
		t.Errorf("allow = %s", s)
	}
}

// Flags beat the environment, which beats the file, which beats the
// defaults; each setting on its own.
func TestAgentConfigPrecedence(t *testing.T) {
	// mqtt_addr out: it would clash with the environment's ws.
	path := writeConfig(t, strings.Replace(fullConfig, `mqtt_addr = "file.example:8883"`, "", 1))
	env := map[string]string{
		"TETHER_DEVICE":     "HostName=env.example;DeviceId=dev1;SharedAccessKey=ZW52",
		"TETHER_TRANSPORT":  "ws",
		"TETHER_KEEPALIVE":  "9s",
		"TETHER_LOG_LEVEL":  "debug",
		"TETHER_ALLOW":      "env=127.0.0.1:1, env2=127.0.0.1:2",
		"TETHER_LOG_FORMAT": "", // empty: unset, the file's json stays
	}
	cfg, err := resolve(t, []string{"--config", path, "--keepalive", "3s", "--log-level", "error"}, "/from/flag/ca.pem", env)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"device (env over file)", cfg.Device, env["TETHER_DEVICE"]},
		{"ca (--ca over file)", cfg.CA, "/from/flag/ca.pem"},
		{"transport (env over file)", cfg.Transport, "ws"},
		{"keepalive (flag over env over file)", cfg.KeepAlive.String(), "3s"},
		{"log level (flag over env over file)", cfg.LogLevel.String(), "ERROR"},
		{"log format (file; empty env is unset)", cfg.LogFormat, "json"},
		{"allow (env replaces file)", cfg.Allow.String(), "env=127.0.0.1:1,env2=127.0.0.1:2"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}

	// --allow replaces the environment's and the file's whole.
	cfg, err = resolve(t, []string{"--config", path, "--allow", "flag=127.0.0.1:3"}, "", map[string]string{"TETHER_ALLOW": "env=127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Allow.String(); s != "flag=127.0.0.1:3" {
		t.Errorf("allow = %s, want the flag's alone", s)
	}
}

func TestAgentConfigErrors(t *testing.T) {
	const key = "c2VjcmV0LWRldmljZS1rZXktbmV2ZXItcHJpbnRlZA=="
	dev := `device = "HostName=h;DeviceId=d;SharedAccessKey=` + key + `"` + "\n"
	for _, tc := range []struct {
		name, file string
		args       []string
		env        map[string]string
		want       []string // all in the error
	}{
		{"unknown key", dev + "keep_alive = \"5s\"\n", nil, nil, []string{`unknown key "keep_alive"`}},
		{"unknown nested key", dev + "[log]\nlevel = \"debug\"\n", nil, nil, []string{`unknown key "log", "log.level"`}},
		{"bad keepalive", dev + "keepalive = \"soon\"\n", nil, nil, []string{"keepalive in ", `"soon"`, "duration"}},
		{"keepalive not a string", dev + "keepalive = 20\n", nil, nil, []string{"keepalive", "line 2"}},
		{"keepalive too short", dev + "keepalive = \"500ms\"\n", nil, nil, []string{"whole seconds"}},
		{"bad transport", dev + "transport = \"udp\"\n", nil, nil, []string{"transport in ", "want ws or tls"}},
		{"mqtt_addr without tls", dev + "mqtt_addr = \"h:8883\"\n", nil, nil, []string{"mqtt_addr in ", "--transport tls"}},
		{"bad log format", dev + "log_format = \"xml\"\n", nil, nil, []string{"log_format in ", "want text or json"}},
		{"bad log level", dev + "log_level = \"loud\"\n", nil, nil, []string{"log_level in ", "want debug"}},
		{"bad allow entry", dev + "allow = [\"ssh\"]\n", nil, nil, []string{"allow in ", "not NAME=HOST:PORT"}},
		{"bad allow target", dev + "[allow]\nssh = 22\n", nil, nil, []string{"allow.ssh", "HOST:PORT"}},
		{"duplicate allow", dev + "allow = [\"a=127.0.0.1:1\", \"a=127.0.0.1:2\"]\n", nil, nil, []string{"allowed twice"}},
		{"syntax", dev + "transport = tls\n", nil, nil, []string{"line 2"}},
		{"unterminated device", `device = "HostName=h;DeviceId=d;SharedAccessKey=` + key + "\n", nil, nil, []string{"line 1"}},
		{"env names itself", dev, nil, map[string]string{"TETHER_KEEPALIVE": "0s"}, []string{"TETHER_KEEPALIVE"}},
		{"flag names itself", dev, []string{"--transport", "quic"}, nil, []string{"--transport"}},
		{"missing file", "", []string{"--config", "/nonexistent/agent.toml"}, nil, []string{"--config /nonexistent/agent.toml: no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeConfig(t, tc.file)}, args...)
			}
			_, err := resolve(t, args, "", tc.env)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), key) {
				t.Errorf("the error holds the key: %v", err)
			}
		})
	}
}

// A file holding the key that others may read is flagged for a warning.
func TestAgentConfigExposedKey(t *testing.T) {
	path := writeConfig(t, fullConfig)
	for _, tc := range []struct {
		mode os.FileMode
		want bool
	}{{0o600, false}, {0o640, true}, {0o644, true}} {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		cfg, err := resolve(t, []string{"--config", path}, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.FileExposed != tc.want {
			t.Errorf("mode %v: exposed = %v, want %v", tc.mode, cfg.FileExposed, tc.want)
		}
	}
	// Without the key in it, the file may be world-readable.
	path = writeConfig(t, "allow = [\"ssh=127.0.0.1:22\"]\n")
	os.Chmod(path, 0o644)
	if cfg, err := resolve(t, []string{"--config", path}, "", nil); err != nil || cfg.FileExposed {
		t.Errorf("keyless file: exposed = %v, %v", cfg.FileExposed, err)
	}
}

// The agent runs from a config file alone, with its log settings: JSON,
// debug level, no key in the log.
func TestAgentRunsFromConfigFile(t *testing.T) {
	key := devicetest.NewKey()
	hub := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	target := echoTarget(t)
	path := writeConfig(t, `device = "`+hub.ConnStr(key)+`"
ca = "`+caFile(t)+`"
keepalive = "5s"
log_format = "json"
log_level = "debug"
allow = ["echo=`+target+`"]
`)
	ctx, cancel := context.WithCancel(context.Background())
	stderr, done := startAgent(t, ctx, "--config", path)
	stderr.waitFor(t, `"msg":"agent running"`)
	hub.NextConnect()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent returned %v", err)
	}
	out := stderr.String()
	if !strings.Contains(out, `"keepalive":"5s"`) || !strings.Contains(out, `"allow":"echo=`+target+`"`) {
		t.Errorf("the log does not show the file's settings:\n%s", out)
	}
	for line := range strings.Lines(out) {
		if !json.Valid([]byte(line)) {
			t.Errorf("non-JSON line %q", line)
		}
	}
	if strings.Contains(out, key) {
		t.Errorf("the log holds the key:\n%s", out)
	}
}

func TestForwardLogger(t *testing.T) {
	var b strings.Builder
	log, plain, err := forwardLogger(&b, "plain", "info", nil, func(string) string { return "" })
	if err != nil || !plain {
		t.Fatalf("plain: %v, %v", plain, err)
	}
	log.Debug("connection", "from", "127.0.0.1:1")
	log.With("device", "dev1").Warn("connection", "from", "127.0.0.1:2", "err", io.ErrUnexpectedEOF)
	if got, want := b.String(), "tether: connection device=dev1 from=127.0.0.1:2: unexpected EOF\n"; got != want {
		t.Errorf("plain output %q, want %q", got, want)
	}

	// The environment picks the format and level unless a flag did.
	b.Reset()
	env := map[string]string{"TETHER_LOG_FORMAT": "json", "TETHER_LOG_LEVEL": "debug"}
	log, plain, err = forwardLogger(&b, "plain", "info", nil, func(k string) string { return env[k] })
	if err != nil || plain {
		t.Fatalf("env json: %v, %v", plain, err)
	}
	log.Debug("connection", "from", "127.0.0.1:1")
	if !json.Valid([]byte(b.String())) || !strings.Contains(b.String(), `"level":"DEBUG"`) {
		t.Errorf("json debug output %q", b.String())
	}
	if _, plain, _ = forwardLogger(&b, "plain", "info", map[string]bool{"log-format": true}, func(k string) string { return env[k] }); !plain {
		t.Error("--log-format lost to the environment")
	}

	for _, tc := range []struct{ format, level, want string }{
		{"xml", "info", "--log-format"},
		{"text", "loud", "--log-level"},
	} {
		if _, _, err := forwardLogger(&b, tc.format, tc.level, nil, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s/%s: err = %v, want one naming %s", tc.format, tc.level, err, tc.want)
		}
	}
}

// TestAgentSettingsEverySource: each setting of the agent is read from
// the config file, from the environment and from the flags, under the
// names its help and its error messages give, and each source beats the
// one before it. ca's flag and variable are the global --ca's, resolved
// before the agent's sources are read: the environment gives none.
func TestAgentSettingsEverySource(t *testing.T) {
	for _, name := range agentSettingNames() {
		t.Run(name, func(t *testing.T) {
			key, envName := agentFileKey(name), agentEnvName(name)
			fileLine, fileValue, flagValue := fmt.Sprintf("%s = %q\n", key, "from-file"), "from-file", "from-flag"
			switch name {
			case "allow":
				fileLine, fileValue, flagValue = `allow = ["a=127.0.0.1:1"]`+"\n", "a=127.0.0.1:1", "f=127.0.0.1:1"
			case "keepalive":
				flagValue = "7s"
			}
			path := writeConfig(t, fileLine)
			file, err := loadAgentFile(path)
			if err != nil {
				t.Fatalf("the config file has no key %s: %v", key, err)
			}

			fs := flag.NewFlagSet("agent", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fl := addAgentFlags(fs)
			ca, wantEnv := "", envName
			var args []string
			if name == "ca" {
				ca, wantEnv = flagValue, "" // TETHER_CA is the global --ca's
			} else {
				args = []string{"--" + name, flagValue}
				if v := cliflag.EnvOf(fs, name); v != envName {
					t.Errorf("--%s's help names %q, want %s", name, v, envName)
				}
			}
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			fl.set = map[string]bool{}
			fs.Visit(func(f *flag.Flag) { fl.set[f.Name] = true })

			var s agentSettings
			for _, c := range []struct {
				src         agentSource
				from, value string
			}{
				{file.source(path), key + " in " + path, fileValue},
				{envSource(func(k string) string { return map[string]string{envName: "from-env"}[k] }), wantEnv, "from-env"},
				{fl.source(ca), "--" + name, flagValue},
			} {
				got, ok := c.src(name)
				value := got.value
				if name == "allow" {
					value = strings.Join(got.list, ",")
				}
				switch {
				case c.from == "" && ok:
					t.Errorf("gives %+v, want nothing", got)
				case c.from != "" && (!ok || got.from != c.from || value != c.value):
					t.Errorf("gives %+v (%v), want %q from %s", got, ok, c.value, c.from)
				}
				if err := s.apply(c.src); err != nil {
					t.Fatal(err)
				}
				for _, f := range s.fields() {
					if f.name == name && ok && f.v.from != c.from {
						t.Errorf("after %s, the setting comes from %q", c.from, f.v.from)
					}
				}
			}
		})
	}
}
