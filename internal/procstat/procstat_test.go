package procstat

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
)

func TestReadSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/PID/stat is Linux's")
	}
	st, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The state is the main thread's, which may sleep while another
	// thread reads. The session may be 0: one whose leader is outside
	// this PID namespace (a container's) reads as 0, so sessions are
	// checked on a child that leads its own, below.
	if st.State == 'Z' || st.Session < 0 {
		t.Errorf("this process: %+v, want alive", st)
	}
	if !Alive(os.Getpid()) {
		t.Error("this process is not alive")
	}
}

// A child started with setsid leads a session whose id is its pid.
func TestSessionOfLeader(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/PID/stat is Linux's")
	}
	cmd := exec.Command("cat")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer cmd.Wait()
	defer in.Close()
	st, err := Read(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Session != cmd.Process.Pid {
		t.Errorf("a session leader's stat: %+v, want session %d", st, cmd.Process.Pid)
	}
}

// A child that ended and was not reaped is a zombie: not alive; once
// reaped, it has no stat at all.
func TestEndedChild(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/PID/stat is Linux's")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	pid := cmd.Process.Pid
	// No event says the child ended before it is reaped: poll its state.
	for Alive(pid) {
		runtime.Gosched()
	}
	if st, err := Read(pid); err != nil || st.State != 'Z' {
		t.Errorf("an ended, unreaped child: %+v, %v; want a zombie", st, err)
	}
	cmd.Wait()
	if Alive(pid) {
		t.Error("a reaped child is alive")
	}
	if _, err := Read(pid); err == nil {
		t.Error("a reaped child has a stat")
	}
}
