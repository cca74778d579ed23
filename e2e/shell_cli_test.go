package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/tether-io/tether/internal/procstat"
	"github.com/tether-io/tether/wire"
)

// shellTerm is `tether shell` running in a pseudo-terminal of the test's,
// as in a user's terminal window.
type shellTerm struct {
	t    *testing.T
	cmd  *exec.Cmd
	ptmx *os.File
	mu   sync.Mutex
	out  bytes.Buffer
	more chan struct{}
	done chan error
}

func startShellTerm(t *testing.T, h *procHub, args ...string) *shellTerm {
	t.Helper()
	cmd := exec.Command(h.tether, append([]string{"shell"}, args...)...)
	cmd.Env = append(os.Environ(), h.env...)
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		t.Fatal(err)
	}
	s := &shellTerm{t: t, cmd: cmd, ptmx: ptmx, more: make(chan struct{}, 1), done: make(chan error, 1)}
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			s.mu.Lock()
			s.out.Write(buf[:n])
			s.mu.Unlock()
			select {
			case s.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		<-read // the terminal's last output, before the exit is told
		s.done <- err
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		ptmx.Close()
		if t.Failed() {
			t.Logf("tether shell's terminal:\n%s", s.screen())
		}
	})
	return s
}

func (s *shellTerm) screen() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

func (s *shellTerm) typeLine(line string) {
	s.t.Helper()
	if _, err := s.ptmx.Write([]byte(line + "\r")); err != nil {
		s.t.Fatal(err)
	}
}

// match waits for the terminal to show re and returns its first group.
func (s *shellTerm) match(re string) string {
	s.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(30 * time.Second)
	for {
		if m := rx.FindStringSubmatch(s.screen()); m != nil {
			return m[len(m)-1]
		}
		select {
		case <-s.more:
		case err := <-s.done:
			s.done <- err
			s.t.Fatalf("tether shell exited (%v) before showing %s", err, re)
		case <-deadline:
			s.t.Fatalf("tether shell showed no %s within 30 s", re)
		}
	}
}

// exit waits for tether shell to end and returns its exit status.
func (s *shellTerm) exit() int {
	s.t.Helper()
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			s.t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		s.t.Fatal("tether shell did not exit within 30 s")
		return -1
	}
}

// remotePID has the device's shell print its own pid.
func (s *shellTerm) remotePID() int {
	s.t.Helper()
	s.typeLine(`echo "pid-$$-end"`)
	pid, err := strconv.Atoi(s.match(`pid-([0-9]+)-end`))
	if err != nil {
		s.t.Fatal(err)
	}
	return pid
}

// startShellAgent runs an agent that serves @shell as "shell" with the
// shell at path, beside the other --allow entries.
func (h *procHub) startShellAgent(t *testing.T, id, path string, allow ...string) *proc {
	t.Helper()
	devStr, stderr, err := runCmd(t, h.env, h.tether, "devices", "add", id)
	if err != nil {
		t.Fatalf("devices add %s: %v: %s", id, err, stderr)
	}
	args := []string{"agent", "--device", strings.TrimSpace(devStr), "--shell", path, "--allow", "shell=@shell"}
	for _, a := range allow {
		args = append(args, "--allow", a)
	}
	agent := startProc(t, h.env, h.tether, args...)
	waitConnected(t, h.env, h.tether, id)
	return agent
}

// newShellSession runs a hub, an agent serving @shell for dev1, and
// tether shell dev1 in a terminal.
func newShellSession(t *testing.T) *shellTerm {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc to see the device's processes in")
	}
	t.Parallel()
	h := startProcHub(t)
	h.startShellAgent(t, "dev1", "/bin/sh")
	return startShellTerm(t, h, "dev1")
}

// tether shell in a terminal: a command's output, the window's size at
// the start and after a resize, and the remote shell's exit status as
// tether's own; the shell is gone after it.
func TestShellCLI(t *testing.T) {
	s := newShellSession(t)
	s.typeLine("echo tether-$((6*7))")
	s.match(`tether-42`)
	s.typeLine(`echo "size-$(stty size)-end"`)
	s.match(`size-24 80-end`)
	if err := pty.Setsize(s.ptmx, &pty.Winsize{Rows: 40, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	// The resize reaches the device after SIGWINCH; ask until it shows.
	eventually(t, 30*time.Second, "stty size on the device to follow the window", func() bool {
		s.typeLine(`echo "size-$(stty size)-end"`)
		return strings.Contains(s.screen(), "size-40 100-end")
	})
	pid := s.remotePID()
	s.typeLine("exit 3")
	if code := s.exit(); code != 3 {
		t.Errorf("tether shell exited with %d, want the shell's 3", code)
	}
	eventually(t, 30*time.Second, "the device's shell to end", func() bool { return !procstat.Alive(pid) })
}

// A viewer that goes away (tether shell killed, its stream closed) ends
// the shell on the device: no shell is left running.
func TestShellCLIClosedStreamEndsShell(t *testing.T) {
	s := newShellSession(t)
	pid := s.remotePID()
	s.typeLine("sleep 1000 &")
	s.typeLine(`echo "job-$!-end"`)
	job, err := strconv.Atoi(s.match(`job-([0-9]+)-end`))
	if err != nil {
		t.Fatal(err)
	}
	if !procstat.Alive(pid) || !procstat.Alive(job) {
		t.Fatalf("shell %d or its job %d is not running", pid, job)
	}
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the device's shell and its job to end", func() bool { return !procstat.Alive(pid) && !procstat.Alive(job) })
}

// An agent that does not serve @shell under the name refuses the stream
// at once, and a stream to a plain TCP service is not taken for a shell.
func TestShellCLIRefused(t *testing.T) {
	t.Parallel()
	h := startProcHub(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			defer c.Close()
		}
	}()
	h.startAgent(t, "dev2", "ssh="+ln.Addr().String())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dev2"}, `device "dev2" refused stream "shell": not in the agent's --allow list`},
		{[]string{"dev2", "ssh"}, `stream "ssh" of device "dev2" is not a shell`},
	} {
		r := runTool(t, time.Minute, h.env, strings.NewReader(""), h.tether, append([]string{"shell"}, tc.args...)...)
		var ee *exec.ExitError
		if !errors.As(r.err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(r.stderr), tc.want) || r.took > 30*time.Second {
			t.Errorf("shell %v: %v after %v, stderr %q; want exit 1 saying %q", tc.args, r.err, r.took, r.stderr, tc.want)
		}
	}
}

// tetherd --record-terminals records a terminal session on the node that
// relayed it (mode 0600, what the screen showed and not what was typed),
// and tether logs --replay plays it back; a policy without RegistryRead
// gets nothing.
func TestShellRecording(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc to see the device's processes in")
	}
	t.Parallel()
	tetherd, tether := buildBinaries(t)
	h := startProcHubOf(t, tetherd, tether, "--record-terminals")
	h.startShellAgent(t, "dev1", "/bin/sh")
	s := startShellTerm(t, h, "dev1")
	// A password typed with the echo off shows nowhere, the recording
	// included.
	s.typeLine("stty -echo; echo ready-$((1+1)); read -r pw; stty echo; echo typed-${#pw}-chars")
	s.match(`ready-2`)
	s.typeLine("hunter2-secret")
	s.match(`typed-14-chars`)
	s.typeLine("echo recorded-$((6*7))")
	s.match(`recorded-42`)
	s.typeLine("exit")
	if code := s.exit(); code != 0 {
		t.Fatalf("tether shell exited with %d", code)
	}

	var id string
	var recorded bool
	eventually(t, 30*time.Second, "the session's stream-log record", func() bool {
		out, _, err := runCmd(t, h.env, h.tether, "logs", "--json", "--device", "dev1", "-n", "1")
		var rec wire.StreamLog
		var props wire.StreamLogProperties
		if err != nil || json.Unmarshal([]byte(out), &rec) != nil || json.Unmarshal([]byte(rec.Properties), &props) != nil {
			return false
		}
		id, recorded = props.StreamID, props.Recorded
		return id != ""
	})
	if !recorded {
		t.Error("the session's stream-log record does not say it was recorded")
	}
	if out, _, err := runCmd(t, h.env, h.tether, "logs", "--device", "dev1", "-n", "1"); err != nil || !strings.Contains(out, id+" (recorded)") {
		t.Errorf("tether logs: %v\n%s\nwant the stream marked recorded", err, out)
	}
	file := filepath.Join(h.dir, "recordings", id+".cast")
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", file, st.Mode().Perm())
	}
	b, _ := os.ReadFile(file)
	if !strings.HasPrefix(string(b), `{"version":2,"width":80,"height":24,`) || strings.Contains(string(b), "hunter2") {
		t.Errorf("the recording:\n%s", b)
	}

	r := runTool(t, time.Minute, h.env, nil, h.tether, "logs", "--replay", id)
	r.mustSucceed(t, "tether logs --replay")
	if !strings.Contains(string(r.stdout), "recorded-42") || strings.Contains(string(r.stdout), "hunter2") {
		t.Errorf("replay printed %q", r.stdout)
	}
	svc, _, err := runCmd(t, h.env, h.tether, "policies", "show", "service")
	if err != nil {
		t.Fatal(err)
	}
	r = runTool(t, time.Minute, append(h.env, "TETHER_HUB="+strings.TrimSpace(svc)), nil, h.tether, "logs", "--replay", id)
	if r.err == nil || len(r.stdout) != 0 {
		t.Errorf("replay with the service policy: %v, stdout %q; want a refusal", r.err, r.stdout)
	}
}
