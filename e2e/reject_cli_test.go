package e2e

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// pipe and forward, run as a user runs them, name why the agent rejected
// a stream: a name not in its --allow, or a target that refused.
func TestRejectionCLI(t *testing.T) {
	t.Parallel()
	h := startProcHub(t)
	h.startAgent(t, "dev1", "ssh="+deadAddr(t))
	const (
		notAllowed = `device "dev1" refused stream "nope": not in the agent's --allow list`
		refused    = `device "dev1" allows stream "ssh" but could not connect to its target: connection refused`
	)
	for stream, want := range map[string]string{"nope": notAllowed, "ssh": refused} {
		r := runTool(t, time.Minute, h.env, strings.NewReader(""), h.tether, "pipe", "dev1", stream)
		if r.err == nil || !strings.Contains(string(r.stderr), want) || len(r.stdout) != 0 {
			t.Errorf("pipe dev1 %s: %v, stdout %q, stderr %q; want a failure saying %q", stream, r.err, r.stdout, r.stderr, want)
		}

		fwd := startProc(t, h.env, h.tether, "forward", "dev1", stream, "--listen", "127.0.0.1:0")
		addr := fwd.forwarding(t, 30*time.Second)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fwd.waitLine(t, want, 30*time.Second)
		// The client's connection ends with nothing relayed.
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if n, err := io.Copy(io.Discard, c); n != 0 || isTimeout(err) {
			t.Errorf("forward %s: the client read %d bytes, then %v; want its connection closed", stream, n, err)
		}
		c.Close()
		if err := fwd.stop(t); err != nil {
			t.Errorf("forward exited with %v after SIGTERM", err)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
