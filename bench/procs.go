package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a program under test, running as its own process with its
// output in a log file.
type Proc struct {
	Name string
	Bin  string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs bin with args, stdout and stderr appended to logPath.
func Start(name, logPath string, env []string, bin string, args ...string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a ^C on the harness reaches us, and we stop
	// the children ourselves in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Name: name, Bin: bin, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to timeout, then kills. Only this process,
// by its pid.
func (p *Proc) Stop(timeout time.Duration) {
	if p == nil || p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// WaitLog waits until the log holds a line containing s and returns it.
func (p *Proc) WaitLog(ctx context.Context, s string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		b, _ := os.ReadFile(p.Log)
		for line := range strings.SplitSeq(string(b), "\n") {
			if strings.Contains(line, s) {
				return line, nil
			}
		}
		if p.Exited() {
			return "", fmt.Errorf("%s exited (%v) before logging %q; see %s", p.Name, p.err, s, p.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("%s did not log %q within %v; see %s", p.Name, s, timeout, p.Log)
}

// RSS is the resident set size in bytes (VmRSS of /proc/PID/status).
func (p *Proc) RSS() (int64, error) { return RSSOf(p.PID()) }

// RSSOf reads VmRSS of a pid.
func RSSOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// CPU is the user+system CPU time the process has used so far.
func (p *Proc) CPU() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 12th and 13th after ")".
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ: 100 on every Linux ABI Go supports
	return time.Duration(ut+st) * time.Second / hz
}

// Build runs go build in modDir with extra build arguments and returns the
// binary's path. Leading extra arguments of the form NAME=value are set in
// go build's environment instead (CGO_ENABLED=0).
func Build(ctx context.Context, modDir, out, pkg string, extra ...string) (string, error) {
	var env []string
	for len(extra) > 0 && !strings.HasPrefix(extra[0], "-") && strings.Contains(extra[0], "=") {
		env = append(env, extra[0])
		extra = extra[1:]
	}
	args := append([]string{"build", "-o", out}, extra...)
	args = append(args, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out, nil
}

// pprofHook is compiled into copies of tetherd and tether through a build
// overlay (the source tree is not touched): with TETHERBENCH_PPROF set, the
// process serves net/http/pprof there, on its own listener and mux, so the
// hub's and CLI's handlers are unchanged. The measured runs use builds
// without it.
const pprofHook = `package main

import (
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	addr := os.Getenv("TETHERBENCH_PPROF")
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return
	}
	go http.Serve(ln, nil)
}
`

// WriteOverlay writes the go build -overlay file that adds pprofHook to
// the main packages of tetherd and tether, and returns its path.
func WriteOverlay(dir, modDir string) (string, error) {
	hook := filepath.Join(dir, "pprofhook.go")
	if err := os.WriteFile(hook, []byte(pprofHook), 0o644); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(modDir)
	if err != nil {
		return "", err
	}
	repl := map[string]string{}
	for _, cmd := range []string{"tetherd", "tether"} {
		repl[filepath.Join(abs, "cmd", cmd, "zz_tetherbench_pprof.go")] = hook
	}
	var b strings.Builder
	b.WriteString(`{"Replace":{`)
	first := true
	for k, v := range repl {
		if !first {
			b.WriteString(",")
		}
		first = false
		fmt.Fprintf(&b, "%q:%q", k, v)
	}
	b.WriteString("}}")
	path := filepath.Join(dir, "overlay.json")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// Smaps reads /proc/PID/smaps_rollup: the resident memory split into
// anonymous pages (heap, stacks) and file-backed ones (the binary's code
// and data as far as it was touched), in bytes.
func (p *Proc) Smaps() (rss, anon int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p.PID()))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			rss = v << 10
		case "Anonymous:":
			anon = v << 10
		}
	}
	return rss, anon, nil
}

// FDs counts the process's open file descriptors (/proc/PID/fd).
func (p *Proc) FDs() (int, error) {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.PID()))
	return len(es), err
}

// NofileLimit is the process's soft limit on open files, as in force for
// it (/proc/PID/limits): a Go program raises its own to the hard limit.
func (p *Proc) NofileLimit() (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", p.PID()))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, errors.New("no Max open files in /proc/PID/limits")
}
