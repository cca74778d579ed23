package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestAgentHubs covers where --hubs comes from: flag over environment
// over file, the file taking an array or a string.
func TestAgentHubs(t *testing.T) {
	dev := `device = "HostName=h;DeviceId=d;SharedAccessKey=eA=="` + "\n"
	for _, tc := range []struct {
		name string
		file string
		env  map[string]string
		args []string
		want []string
		err  string
	}{
		{"file array", dev + `hubs = ["a:1", "b:2"]` + "\n", nil, nil, []string{"a:1", "b:2"}, ""},
		{"file string", dev + `hubs = "a:1, b:2"` + "\n", nil, nil, []string{"a:1", "b:2"}, ""},
		{"env over file", dev + `hubs = ["a:1"]` + "\n", map[string]string{"TETHER_HUBS": "c:3"}, nil, []string{"c:3"}, ""},
		{"flag over env", dev, map[string]string{"TETHER_HUBS": "c:3"}, []string{"--hubs", "d:4,e"}, []string{"d:4", "e"}, ""},
		{"none", dev, nil, nil, nil, ""},
		{"bad entry", dev, nil, []string{"--hubs", "https://x/"}, nil, "--hubs"},
		{"bad file type", dev + "hubs = 3\n", nil, nil, nil, "hubs"},
		{"with mqtt-addr", dev + "transport = \"tls\"\nmqtt_addr = \"m:8883\"\n", nil, []string{"--hubs", "a:1"}, nil, "both say where"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent.toml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			fs := flag.NewFlagSet("agent", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fl := addAgentFlags(fs)
			if err := fs.Parse(append([]string{"--config", path}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			fl.set = map[string]bool{}
			fs.Visit(func(f *flag.Flag) { fl.set[f.Name] = true })
			cfg, err := resolveAgentConfig(fl, "", func(k string) string { return tc.env[k] })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Hubs, tc.want) {
				t.Fatalf("hubs = %q, want %q", cfg.Hubs, tc.want)
			}
		})
	}
}
