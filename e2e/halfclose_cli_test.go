package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// startHashServer serves, on loopback, a protocol that needs half-close:
// it reads its client to EOF and only then answers with the hex SHA-256 of
// what it read, and closes. Through a tunnel that turns EOF into a close
// the answer is lost.
func startHashServer(t *testing.T) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		defer c.Close()
		// Bounded so a tunnel that never passes EOF on cannot keep the
		// connection past the test.
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		_, _ = io.WriteString(c, hex.EncodeToString(h.Sum(nil)))
	})
}

// TestHalfCloseThroughCLI checks that the end of a client's input reaches
// the device's service as EOF while the answer still comes back, through
// `tether forward` and through `tether pipe`.
func TestHalfCloseThroughCLI(t *testing.T) {
	t.Parallel()
	h := startProcHub(t)
	h.startAgent(t, "dev1", "hc="+startHashServer(t))
	input := randomBytes(t, 1<<20)
	sum := sha256.Sum256(input)
	want := hex.EncodeToString(sum[:])

	t.Run("forward", func(t *testing.T) {
		addr := h.startForward(t, "dev1", "hc")
		start := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		if _, err := c.Write(input); err != nil {
			t.Fatalf("writing 1 MiB: %v", err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("reading the answer: %v (got %q)", err, got)
		}
		if string(got) != want {
			t.Fatalf("answer %q, want %q: the end of the input was not passed on as EOF, or the answer was cut", got, want)
		}
		t.Logf("forward: 1 MiB and its answer in %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("pipe", func(t *testing.T) {
		r := runTool(t, time.Minute, h.env, bytes.NewReader(input), h.tether, "pipe", "dev1", "hc")
		r.mustSucceed(t, "tether pipe dev1 hc < 1 MiB")
		if string(r.stdout) != want {
			t.Fatalf("stdout %q, want %q: the end of stdin was not passed on as EOF, or the answer was cut", r.stdout, want)
		}
		if len(r.stderr) != 0 {
			t.Errorf("stderr %q, want nothing", r.stderr)
		}
	})

	// The failures a ProxyCommand meets: one line on stderr, nothing on
	// stdout, non-zero exit.
	t.Run("pipe errors", func(t *testing.T) {
		if _, stderr, err := runCmd(t, h.env, h.tether, "devices", "add", "dev2"); err != nil {
			t.Fatalf("devices add dev2: %v: %s", err, stderr)
		}
		for _, tc := range []struct {
			args []string
			env  []string
			want string
		}{
			{[]string{"pipe", "ghost", "hc"}, h.env, `device "ghost" not found`},
			{[]string{"pipe", "dev2", "hc"}, h.env, `device "dev2" is not connected`},
			{[]string{"pipe", "dev1", "nope"}, h.env, `device "dev1" refused stream "nope": not in the agent's --allow list`},
			{[]string{"pipe", "dev1", "hc"}, append(h.env[:1:1], "TETHER_CA="), "certificate not trusted"},
		} {
			r := runTool(t, time.Minute, tc.env, strings.NewReader(""), h.tether, tc.args...)
			var ee *exec.ExitError
			if !errors.As(r.err, &ee) || ee.ExitCode() == 0 {
				t.Errorf("tether %v: exit %v, want non-zero", tc.args, r.err)
			}
			stderr := strings.TrimSpace(string(r.stderr))
			if !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "\n") {
				t.Errorf("tether %v: stderr %q, want one line with %q", tc.args, stderr, tc.want)
			}
			if len(r.stdout) != 0 {
				t.Errorf("tether %v: stdout %q, want nothing", tc.args, r.stdout)
			}
		}
	})
}
