package main

import (
	"strings"
	"testing"
	"time"
)

// @shell and its settings come from every source, and mistakes are told
// with where they came from.
func TestAgentShellSettings(t *testing.T) {
	path := writeConfig(t, `shell = "/bin/sh"
shell_idle = "5m"
shell_max = "0"
[allow]
term = "@shell"
`)
	cfg, err := resolve(t, []string{"--config", path}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Allow["term"] != shellTarget || cfg.Shell != (shellConfig{Shell: "/bin/sh", Idle: 5 * time.Minute}) {
		t.Errorf("from the file: allow %v, shell %+v", cfg.Allow, cfg.Shell)
	}
	cfg, err = resolve(t, []string{"--allow", "shell=@shell", "--shell-max", "1h"}, "", map[string]string{"TETHER_SHELL_USER": "pi"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Shell != (shellConfig{User: "pi", Idle: 30 * time.Minute, Max: time.Hour}) {
		t.Errorf("from flags and environment: %+v", cfg.Shell)
	}

	for v, want := range map[string]string{
		"shell=@bash": `target "@bash" of "shell": the agent's only built-in handler is @shell`,
		"shell=bash":  `target "bash" of "shell" is not HOST:PORT or @shell`,
		"shell":       `"shell" is not NAME=HOST:PORT or NAME=@shell`,
	} {
		if err := (allowList{}).Set(v); err == nil || err.Error() != want {
			t.Errorf("--allow %s: %v, want %s", v, err, want)
		}
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--allow", "shell=@shell", "--shell-idle", "soon"}, nil, `--shell-idle "soon": want a duration`},
		{[]string{"--allow", "shell=@shell", "--shell-max", "-1h"}, nil, `--shell-max "-1h": want a duration`},
		{[]string{"--allow", "ssh=127.0.0.1:22", "--shell-user", "pi"}, nil, "--shell-user is for streams served by the agent's shell, and no --allow names @shell"},
		{[]string{"--allow", "ssh=127.0.0.1:22"}, map[string]string{"TETHER_SHELL": "/bin/sh"}, "TETHER_SHELL is for streams served"},
	} {
		_, err := resolve(t, tc.args, "", tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want %q", tc.args, tc.env, err, tc.want)
		}
	}
}
