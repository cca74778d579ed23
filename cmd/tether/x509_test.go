package main

import (
	"strings"
	"testing"
)

// TestAgentCertConfig: --cert and --key come from flags, environment or
// the config file like every setting, and only together.
func TestAgentCertConfig(t *testing.T) {
	file := writeConfig(t, "device = \"HostName=h;DeviceId=d;x509=true\"\ncert = \"/file/c.pem\"\nkey = \"/file/k.pem\"\n")
	for _, tc := range []struct {
		name       string
		args       []string
		env        map[string]string
		cert, key  string
		errContain string
	}{
		{name: "none"},
		{name: "flags", args: []string{"--cert", "c.pem", "--key", "k.pem"}, cert: "c.pem", key: "k.pem"},
		{name: "env", env: map[string]string{"TETHER_CERT": "/env/c.pem", "TETHER_KEY": "/env/k.pem"}, cert: "/env/c.pem", key: "/env/k.pem"},
		{name: "file", args: []string{"--config", file}, cert: "/file/c.pem", key: "/file/k.pem"},
		{name: "flag beats file", args: []string{"--config", file, "--cert", "c.pem"}, cert: "c.pem", key: "/file/k.pem"},
		{name: "cert alone", args: []string{"--cert", "c.pem"}, errContain: "--cert and --key go together"},
		{name: "key alone", env: map[string]string{"TETHER_KEY": "k.pem"}, errContain: "--cert and --key go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := resolve(t, tc.args, "", tc.env)
			if tc.errContain != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errContain) {
					t.Fatalf("err = %v, want %q", err, tc.errContain)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Cert != tc.cert || cfg.Key != tc.key {
				t.Fatalf("cert %q key %q, want %q %q", cfg.Cert, cfg.Key, tc.cert, tc.key)
			}
		})
	}
}
