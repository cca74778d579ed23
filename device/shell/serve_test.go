//go:build linux

package shell

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/tether-io/tether/internal/procstat"
	"github.com/tether-io/tether/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// viewer is the test's end of a terminal stream, as tether shell is.
type viewer struct {
	t    *testing.T
	conn net.Conn
	mu   sync.Mutex
	out  bytes.Buffer
	more chan struct{} // a signal after each frame
	exit chan [2]string
	done chan struct{}
}

// openSession serves a shell with opts on one end of a pipe and returns the
// viewer on the other, hello and size sent; res gets Serve's result.
func openSession(t *testing.T, opts Options) (*viewer, chan Result) {
	t.Helper()
	if opts.Shell == "" {
		opts.Shell = "/bin/sh"
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	dev, view := net.Pipe()
	res := make(chan Result, 1)
	go func() { res <- srv.Serve(context.Background(), dev) }()
	v := &viewer{t: t, conn: view, more: make(chan struct{}, 1), exit: make(chan [2]string, 1), done: make(chan struct{})}
	r := wire.NewTermReader(view)
	if err := r.ReadHello(); err != nil {
		t.Fatal(err)
	}
	go v.read(r)
	v.send(wire.TermHelloFrame())
	v.send(wire.TermResizeFrame(24, 80))
	t.Cleanup(func() {
		view.Close()
		<-v.done
		select {
		case <-res:
		case <-time.After(20 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return v, res
}

func (v *viewer) read(r *wire.TermReader) {
	defer close(v.done)
	for {
		typ, p, err := r.Next()
		if err != nil {
			return
		}
		switch typ {
		case wire.TermData:
			v.mu.Lock()
			v.out.Write(p)
			v.mu.Unlock()
		case wire.TermExit:
			st, why, _ := wire.ParseTermExit(p)
			v.exit <- [2]string{strconv.Itoa(int(st)), why}
		}
		select {
		case v.more <- struct{}{}:
		default:
		}
	}
}

func (v *viewer) send(b []byte) {
	v.t.Helper()
	if _, err := v.conn.Write(b); err != nil {
		v.t.Fatal(err)
	}
}

func (v *viewer) typeLine(s string) { v.send(wire.AppendTermFrame(nil, wire.TermData, []byte(s+"\r"))) }

// waitFor waits for the screen's output to hold s, and returns the
// output after it.
func (v *viewer) waitFor(s string) string {
	v.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		v.mu.Lock()
		out := v.out.String()
		v.mu.Unlock()
		if i := strings.Index(out, s); i >= 0 {
			return out[i+len(s):]
		}
		select {
		case <-v.more:
		case <-v.done:
			v.t.Fatalf("the stream ended before %q; output:\n%s", s, out)
		case <-deadline:
			v.t.Fatalf("no %q within 10 s; output:\n%s", s, out)
		}
	}
}

// waitExit waits for the exit frame: status and why.
func (v *viewer) waitExit() (string, string) {
	v.t.Helper()
	select {
	case e := <-v.exit:
		return e[0], e[1]
	case <-time.After(20 * time.Second):
		v.t.Fatal("no exit frame within 20 s")
		return "", ""
	}
}

// number waits for the shell to print mark-N-end and returns N.
func (v *viewer) number(mark string) int {
	v.t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(mark) + `-([0-9]+)-end`)
	deadline := time.After(10 * time.Second)
	for {
		v.mu.Lock()
		m := re.FindStringSubmatch(v.out.String())
		v.mu.Unlock()
		if m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
		select {
		case <-v.more:
		case <-v.done:
			v.t.Fatalf("the stream ended before %s-N-end", mark)
		case <-deadline:
			v.t.Fatalf("no %s-N-end within 10 s", mark)
		}
	}
}

// pid has the shell print the value of expr and returns it.
func (v *viewer) pid(expr, mark string) int {
	v.t.Helper()
	v.typeLine("echo " + mark + "-" + expr + "-end")
	return v.number(mark)
}

// A command's output comes back, and exit 3 is status 3, to the viewer
// and in the result.
func TestShellExitStatus(t *testing.T) {
	v, res := openSession(t, Options{})
	v.typeLine("echo tether-$((40+2))")
	v.waitFor("tether-42")
	v.typeLine("exit 3")
	if st, why := v.waitExit(); st != "3" || why != "" {
		t.Errorf("exit frame: status %s, why %q; want 3 and none", st, why)
	}
	r := <-res
	if !r.Started || r.Status != 3 || r.Err != nil || r.Why != "" || r.In == 0 || r.Out == 0 {
		t.Errorf("result %+v", r)
	}
	res <- r
}

// The viewer's size reaches the terminal at the start and on each resize.
func TestShellResize(t *testing.T) {
	v, _ := openSession(t, Options{})
	v.typeLine("stty size")
	v.waitFor("24 80")
	v.send(wire.TermResizeFrame(50, 132))
	v.typeLine("stty size")
	v.waitFor("50 132")
}

// Closing the stream ends the shell and what it started, a background job
// included: no process of the session is left.
func TestShellClosedStreamLeavesNoProcess(t *testing.T) {
	v, res := openSession(t, Options{Grace: time.Second})
	shellPID := v.pid("$$", "shell")
	v.typeLine("sleep 1000 &")
	jobPID := v.pid("$!", "job")
	// A process that ignores the hangup is killed after the grace period.
	v.typeLine("sh -c 'trap \"\" HUP; echo stubborn-$$-end; exec sleep 1000' &")
	stubborn := v.number("stubborn")
	for _, pid := range []int{shellPID, jobPID, stubborn} {
		if !procstat.Alive(pid) {
			t.Fatalf("pid %d is not running before the close", pid)
		}
	}
	v.conn.Close()
	r := <-res
	res <- r
	if r.Why != "the viewer closed the stream" || r.Status != 128+int(unix.SIGHUP) {
		t.Errorf("result %+v, want a hangup for the viewer's close", r)
	}
	for _, pid := range []int{shellPID, jobPID, stubborn} {
		if procstat.Alive(pid) {
			t.Errorf("pid %d is still running after the stream closed", pid)
		}
	}
}

// An agent started with SIGHUP ignored (under nohup) still hangs its
// shells up: they do not inherit the ignored hangup, so a closed stream
// ends the shell at once rather than after the grace period's kill. The
// test runs itself again under nohup(1), so that the hangup is ignored
// from the start as an agent's would be, in a process of its own.
func TestShellHangsUpUnderNohup(t *testing.T) {
	if os.Getenv("TETHER_SHELL_TEST_NOHUP") == "1" {
		if !signal.Ignored(unix.SIGHUP) {
			t.Fatal("started under nohup, the test does not ignore SIGHUP")
		}
		v, res := openSession(t, Options{Grace: time.Minute})
		v.typeLine("echo ready-$((1+1))-end")
		v.waitFor("ready-2-end")
		v.conn.Close()
		select {
		case r := <-res:
			res <- r
			if r.Status != 128+int(unix.SIGHUP) {
				t.Errorf("result %+v, want the shell hung up (status %d)", r, 128+int(unix.SIGHUP))
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the shell outlived its closed stream by 30 s: it ignored the hangup")
		}
		return
	}
	nohup, err := exec.LookPath("nohup")
	if err != nil {
		t.Skipf("no nohup to start the agent's side with SIGHUP ignored: %v", err)
	}
	cmd := exec.Command(nohup, os.Args[0], "-test.run=^TestShellHangsUpUnderNohup$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TETHER_SHELL_TEST_NOHUP=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("under nohup: %v\n%s", err, out)
	}
}

// The idle and total limits end the session, saying which.
func TestShellLimits(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Idle: 300 * time.Millisecond}, "--shell-idle"},
		{Options{Max: 500 * time.Millisecond}, "--shell-max"},
	} {
		v, _ := openSession(t, tc.opts)
		if tc.opts.Max > 0 {
			// Busy all along: the total limit ends it all the same.
			v.typeLine("while :; do echo busy; sleep 0.05; done")
		}
		st, why := v.waitExit()
		if st != strconv.Itoa(128+int(unix.SIGHUP)) || !strings.Contains(why, tc.want) {
			t.Errorf("%s: exit frame %s %q", tc.want, st, why)
		}
	}
}

// The shell's environment is its own: nothing of the agent's, which may
// hold the device's key.
func TestShellEnvironment(t *testing.T) {
	t.Setenv("TETHER_DEVICE", "HostName=h;DeviceId=d;SharedAccessKey=secret-key")
	v, _ := openSession(t, Options{})
	v.typeLine("env; echo env-$((1+1))-end")
	v.waitFor("env-2-end")
	v.mu.Lock()
	all := v.out.String()
	v.mu.Unlock()
	if strings.Contains(all, "secret-key") {
		t.Errorf("the shell sees the agent's environment:\n%s", all)
	}
	for _, want := range []string{"TERM=xterm-256color", "HOME=", "LANG="} {
		if !strings.Contains(all, want) {
			t.Errorf("no %s in the shell's environment:\n%s", want, all)
		}
	}
}

// A stream whose viewer says no hello starts no shell.
func TestShellNeedsHello(t *testing.T) {
	srv, err := New(Options{Shell: "/bin/sh"})
	if err != nil {
		t.Fatal(err)
	}
	dev, view := net.Pipe()
	res := make(chan Result, 1)
	go func() { res <- srv.Serve(context.Background(), dev) }()
	go func() {
		wire.NewTermReader(view).ReadHello()
		view.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
	}()
	r := <-res
	view.Close()
	if r.Started || !errors.Is(r.Err, wire.ErrNotTerminal) {
		t.Errorf("result %+v, want no shell and ErrNotTerminal", r)
	}
}

// Mistakes in the options are told by New.
func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Shell: "sh"}, "absolute path"},
		{Options{Shell: "/nonexistent/sh"}, "no such file"},
		{Options{Shell: "/etc/passwd"}, "not an executable"},
		{Options{Idle: -1}, "negative"},
		{Options{User: "no-such-user-here"}, "not in /etc/passwd"},
	} {
		if os.Geteuid() != 0 && tc.opts.User != "" {
			tc.want = ErrNotRoot.Error()
		}
		if _, err := New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.opts, err, tc.want)
		}
	}
}

// As root, --shell-user runs the shell as that user, with its groups.
func TestShellUser(t *testing.T) {
	if os.Geteuid() != 0 {
		if _, err := New(Options{User: "nobody"}); !errors.Is(err, ErrNotRoot) {
			t.Errorf("User as non-root: %v, want ErrNotRoot", err)
		}
		return
	}
	e, ok := passwdEntry(func(e passwd) bool { return e.name == "nobody" })
	if !ok {
		t.Skip("no user nobody")
	}
	v, _ := openSession(t, Options{User: "nobody"})
	v.typeLine("echo uid-$(id -u)-end")
	v.waitFor("uid-" + strconv.Itoa(int(e.uid)) + "-end")
}
