package e2e

import (
	"strings"
	"testing"
	"time"
)

// tether agent takes a Tether hub's streams on its data session once its
// first stream opened it, and keeps each on a connection of its own with
// --no-sessions or TETHER_SESSIONS=0; streams echo either way.
func TestAgentSessionsCLI(t *testing.T) {
	needSessions(t)
	t.Parallel()
	h := startProcHub(t)
	echo := startEcho(t)
	for _, tc := range []struct {
		name     string
		args     []string
		env      []string
		sessions bool
	}{
		{"default", nil, nil, true},
		{"flag", []string{"--no-sessions"}, nil, false},
		{"env", nil, []string{"TETHER_SESSIONS=0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "agent-" + tc.name
			devStr, stderr, err := runCmd(t, h.env, h.tether, "devices", "add", id)
			if err != nil {
				t.Fatalf("devices add %s: %v: %s", id, err, stderr)
			}
			args := append([]string{"agent", "--device", strings.TrimSpace(devStr), "--allow", "echo=" + echo, "--log-level", "debug"}, tc.args...)
			agent := startProc(t, append(append([]string{}, h.env...), tc.env...), h.tether, args...)
			waitConnected(t, h.env, h.tether, id)

			pipe := func(msg string) {
				t.Helper()
				r := runTool(t, time.Minute, h.env, strings.NewReader(msg), h.tether, "pipe", id, "echo")
				r.mustSucceed(t, "pipe")
				if string(r.stdout) != msg {
					t.Fatalf("pipe echoed %q, want %q", r.stdout, msg)
				}
			}
			pipe("the first stream")
			if tc.sessions {
				// The session opens beside the first stream.
				eventually(t, 30*time.Second, "a stream on the agent's session", func() bool {
					pipe("next")
					return strings.Contains(agent.out.String(), "stream request on the session")
				})
				return
			}
			for range 3 {
				pipe("again")
			}
			if out := agent.out.String(); strings.Contains(out, "session") {
				t.Fatalf("the agent used a session:\n%s", out)
			}
		})
	}
}
