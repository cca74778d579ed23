//go:build unix

package shell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/tether-io/tether/wire"
)

func supported() error { return nil }

// Serve runs one session on conn, the stream's device end, and closes
// conn: it greets the viewer, starts the shell at the viewer's hello,
// relays until the shell or the stream ends, and leaves no process of the
// shell's session behind.
func (s *Server) Serve(ctx context.Context, conn net.Conn) Result {
	defer conn.Close()
	res := Result{Status: -1}
	w := &frameWriter{conn: conn}
	if err := w.write(wire.TermHelloFrame()); err != nil {
		res.Err = fmt.Errorf("greeting the viewer: %w", err)
		return res
	}
	r := wire.NewTermReader(conn)
	wait := defaultHelloWait
	if s.opts.Idle > 0 && s.opts.Idle < wait {
		wait = s.opts.Idle
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	if err := r.ReadHello(); err != nil {
		res.Err = fmt.Errorf("the viewer's hello: %w", err)
		return res
	}
	// The viewer's size comes next; a frame of another kind is kept for
	// the shell.
	size := &pty.Winsize{Rows: 24, Cols: 80}
	typ, p, err := r.Next()
	if err != nil {
		res.Err = fmt.Errorf("reading from the viewer: %w", err)
		return res
	}
	var first []byte
	if typ == wire.TermResize {
		if rows, cols, err := wire.ParseTermResize(p); err == nil && rows > 0 && cols > 0 {
			size.Rows, size.Cols = rows, cols
		}
	} else if typ == wire.TermData {
		first = append([]byte(nil), p...)
	}
	conn.SetReadDeadline(time.Time{})

	sess, err := s.start(size)
	if err != nil {
		res.Err = err
		return res
	}
	res.Started = true
	s.log.Debug("shell started", "pid", sess.cmd.Process.Pid, "user", s.login.name, "shell", s.login.shell)
	return sess.run(ctx, s, conn, r, w, first)
}

// session is one running shell.
type session struct {
	cmd    *exec.Cmd
	ptmx   *os.File // the pseudo-terminal's master, in the runtime's poller
	pid    int      // the shell's: its session's and its process group's id
	exited chan struct{}
	state  *os.ProcessState

	// last is the time of the last byte either way, for the idle limit.
	last    atomic.Int64
	in, out atomic.Int64
}

// inheritedIgnore receives SIGHUP and SIGINT where the agent was started
// with them ignored; nothing reads it, so the agent ignores them still.
var inheritedIgnore = make(chan os.Signal, 1)

// defaultSignalsInChildren makes a shell start with SIGHUP and SIGINT at
// their defaults although the agent was started with them ignored (under
// nohup, say). Go keeps an ignored SIGHUP or SIGINT ignored and a child
// inherits that across exec: such a shell outlives the hangup of a closed
// stream until the grace period's kill, and Ctrl-C stops none of its
// jobs. A handler of Go's own is reset in a forked child, so one that
// swallows the signal keeps the agent as it was and frees the shell.
func defaultSignalsInChildren() {
	for _, sig := range []os.Signal{syscall.SIGHUP, syscall.SIGINT} {
		if signal.Ignored(sig) {
			signal.Notify(inheritedIgnore, sig)
		}
	}
}

// start starts the shell on a new pseudo-terminal of size.
func (s *Server) start(size *pty.Winsize) (*session, error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("opening a pseudo-terminal: %w", err)
	}
	defer tty.Close()
	if err := pty.Setsize(ptmx, size); err != nil {
		ptmx.Close()
		return nil, fmt.Errorf("sizing the pseudo-terminal: %w", err)
	}
	acc := s.login
	cmd := exec.Command(acc.shell)
	// A leading "-" makes it a login shell, which reads the profile as a
	// login over ssh does.
	cmd.Args = []string{"-" + filepath.Base(acc.shell)}
	cmd.Env = acc.environ()
	cmd.Dir = "/"
	if st, err := os.Stat(acc.home); err == nil && st.IsDir() {
		cmd.Dir = acc.home
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	// A session of its own with the terminal as its controlling one: the
	// shell's job control works, and a hangup reaches all it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if acc.other {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: acc.uid, Gid: acc.gid, Groups: acc.groups}
	}
	defaultSignalsInChildren()
	if err := cmd.Start(); err != nil {
		ptmx.Close()
		return nil, fmt.Errorf("starting %s: %w", acc.shell, err)
	}
	// pty's own calls left the master in blocking mode; a copy of it in the
	// poller lets Close end a read or write blocked on it, so that no
	// goroutine outlives the session whatever the shell's children hold.
	master, err := pollable(ptmx)
	ptmx.Close()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	sess := &session{cmd: cmd, ptmx: master, pid: cmd.Process.Pid, exited: make(chan struct{})}
	sess.touch()
	go func() {
		cmd.Wait()
		sess.state = cmd.ProcessState
		close(sess.exited)
	}()
	return sess, nil
}

// pollable returns a non-blocking duplicate of f in the runtime's poller.
func pollable(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("pseudo-terminal: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pseudo-terminal: %w", err)
	}
	return os.NewFile(uintptr(fd), "ptmx"), nil
}

func (ss *session) touch() { ss.last.Store(time.Now().UnixNano()) }

// run relays between the viewer and the shell until one of them ends,
// then ends the other.
func (ss *session) run(ctx context.Context, s *Server, conn net.Conn, r *wire.TermReader, w *frameWriter, first []byte) Result {
	res := Result{Started: true, Status: -1}
	outDone := make(chan struct{})
	inDone := make(chan struct{})
	var inErr error
	go func() {
		defer close(outDone)
		ss.copyOut(w)
	}()
	go func() {
		defer close(inDone)
		inErr = ss.copyIn(r, first)
	}()

	idle, stopIdle := ss.idleTimer(s.opts.Idle)
	defer stopIdle()
	var max <-chan time.Time
	if s.opts.Max > 0 {
		t := time.NewTimer(s.opts.Max)
		defer t.Stop()
		max = t.C
	}

	viewerGone := false
	select {
	case <-ss.exited:
	case <-inDone:
		// However the viewer left (a close, a browser tab's 1001, a cut
		// connection), the shell goes with it.
		viewerGone = true
		res.Why = "the viewer closed the stream"
		if err := inErr; err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			res.Why = "the viewer's stream ended: " + err.Error()
		}
	case <-idle:
		res.Why = fmt.Sprintf("no input or output for %v (the agent's --shell-idle)", s.opts.Idle)
	case <-max:
		res.Why = fmt.Sprintf("the session reached its limit of %v (the agent's --shell-max)", s.opts.Max)
	case <-ctx.Done():
		res.Why = "the agent is stopping"
	}
	if res.Why != "" {
		ss.hangUp(s.opts.Grace)
	}
	// What the shell's session still holds open, after the shell, keeps
	// the terminal's output open: hang it up too, and give the output a
	// moment to drain before closing the terminal.
	ss.signalSession(unix.SIGHUP)
	select {
	case <-outDone:
	case <-time.After(time.Second):
	}
	ss.ptmx.Close()
	<-outDone
	res.Status = exitStatus(ss.state)
	if !viewerGone {
		// The status before the close, so that the viewer can tell an
		// exit from a cut.
		if err := w.write(wire.TermExitFrame(int32(res.Status), res.Why)); err != nil && res.Err == nil {
			res.Err = fmt.Errorf("telling the viewer the shell's status: %w", err)
		}
	}
	conn.Close()
	<-inDone
	ss.reap(s.opts.Grace)
	res.In, res.Out = ss.in.Load(), ss.out.Load()
	return res
}

// idleTimer fires once the session has been idle for d (never when d is
// 0); stop releases it.
func (ss *session) idleTimer(d time.Duration) (<-chan struct{}, func()) {
	fired := make(chan struct{})
	if d <= 0 {
		return fired, func() {}
	}
	var mu sync.Mutex
	var t *time.Timer
	var check func()
	check = func() {
		mu.Lock()
		defer mu.Unlock()
		left := d - time.Since(time.Unix(0, ss.last.Load()))
		if left <= 0 {
			close(fired)
			return
		}
		t = time.AfterFunc(left, check)
	}
	mu.Lock()
	t = time.AfterFunc(d, check)
	mu.Unlock()
	return fired, func() {
		mu.Lock()
		defer mu.Unlock()
		t.Stop()
	}
}

// copyOut sends the terminal's output to the viewer until the terminal
// or the stream ends.
func (ss *session) copyOut(w *frameWriter) {
	buf := make([]byte, wire.TermHeaderLen+16<<10)
	for {
		n, err := ss.ptmx.Read(buf[wire.TermHeaderLen:])
		if n > 0 {
			ss.touch()
			ss.out.Add(int64(n))
			buf[0], buf[1], buf[2] = wire.TermData, byte(n>>8), byte(n)
			if w.write(buf[:wire.TermHeaderLen+n]) != nil {
				return
			}
		}
		if err != nil {
			// EIO once every holder of the terminal's other side closed
			// it; ErrClosed once run closed the master.
			return
		}
	}
}

// copyIn applies the viewer's frames to the terminal until the stream
// ends; first is data the viewer sent before its size.
func (ss *session) copyIn(r *wire.TermReader, first []byte) error {
	if len(first) > 0 {
		if err := ss.input(first); err != nil {
			return err
		}
	}
	for {
		typ, p, err := r.Next()
		if err != nil {
			return err
		}
		switch typ {
		case wire.TermData:
			if err := ss.input(p); err != nil {
				return err
			}
		case wire.TermResize:
			rows, cols, err := wire.ParseTermResize(p)
			if err == nil && rows > 0 && cols > 0 {
				ss.resize(rows, cols)
			}
		}
		// Other frames (a hello again, a later version's) are skipped.
	}
}

// input writes the viewer's keys to the terminal.
func (ss *session) input(p []byte) error {
	ss.touch()
	ss.in.Add(int64(len(p)))
	if _, err := ss.ptmx.Write(p); err != nil {
		return fmt.Errorf("writing to the terminal: %w", err)
	}
	return nil
}

// resize sets the terminal's size, which sends SIGWINCH to its foreground
// process group. Through SyscallConn: Fd would put the master back in
// blocking mode.
func (ss *session) resize(rows, cols uint16) {
	rc, err := ss.ptmx.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
}

// hangUp ends the shell as a closed terminal line would: SIGHUP to its
// session, then SIGKILL to what is left after grace.
func (ss *session) hangUp(grace time.Duration) {
	ss.signalSession(unix.SIGHUP)
	// A shell waiting to write to the terminal hears nothing until it can:
	// SIGCONT wakes a stopped job, the hangup does the rest.
	ss.signalSession(unix.SIGCONT)
	select {
	case <-ss.exited:
	case <-time.After(grace):
		ss.signalSession(unix.SIGKILL)
		<-ss.exited
	}
}

// reap waits up to grace for the rest of the shell's session, already
// hung up, to end, and kills what is left, waiting until it is gone.
func (ss *session) reap(grace time.Duration) {
	deadline := time.Now().Add(grace)
	killed := false
	for len(sessionMembers(ss.pid)) > 0 {
		if !killed && time.Now().After(deadline) {
			ss.signalSession(unix.SIGKILL)
			killed = true
			deadline = time.Now().Add(grace)
		} else if killed && time.Now().After(deadline) {
			return // unkillable (in uninterruptible sleep): nothing more to do
		}
		// No event tells that another process's children ended.
		time.Sleep(20 * time.Millisecond)
	}
}

// signalSession sends sig to the shell's process group and to every
// other process still in its session.
func (ss *session) signalSession(sig unix.Signal) {
	unix.Kill(-ss.pid, sig)
	for _, pid := range sessionMembers(ss.pid) {
		unix.Kill(pid, sig)
	}
}

// exitStatus is a shell's $? for the process that ended as st tells.
func exitStatus(st *os.ProcessState) int {
	if st == nil {
		return -1
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// frameWriter writes whole frames to the viewer, one at a time, each
// under a deadline.
type frameWriter struct {
	mu   sync.Mutex
	conn net.Conn
}

func (w *frameWriter) write(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := w.conn.Write(b)
	return err
}
