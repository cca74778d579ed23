// Package shell serves a shell on a pseudo-terminal over one device stream:
// the device's end of a terminal stream (wire's TermHello and the frames
// after it, docs/protocol.md). tether agent mounts it for a stream named
// in --allow NAME=@shell; a program built on the device SDK can mount it
// on a stream of its own the same way:
//
//	srv, err := shell.New(shell.Options{Idle: 30 * time.Minute})
//	...
//	conn, err := req.Accept(ctx)
//	res := srv.Serve(ctx, conn)
//
// A shell lives exactly as long as its stream: the viewer closing the
// stream, a time limit or ctx hang it up (SIGHUP to its session), and
// what is still running a grace period later is killed. The shell's own
// exit ends the stream, with its status sent to the viewer first.
//
// The shell gets an environment of its own (TERM, HOME, USER, LOGNAME,
// SHELL, PATH and the locale), never the agent's, which may hold the
// device's key.
package shell

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults of Options.
const (
	// DefaultGrace is how long a hung-up shell and what it started have to
	// end before they are killed.
	DefaultGrace = 5 * time.Second
	// defaultHelloWait bounds the wait for the viewer's hello: no shell
	// starts before it, and a stream that never says it wastes nothing
	// longer than this.
	defaultHelloWait = 30 * time.Second
	// writeTimeout bounds one write to the viewer: a viewer that stopped
	// reading for this long ends the session.
	writeTimeout = time.Minute
	// fallbackShell is the shell of a user whose login shell is unknown.
	fallbackShell = "/bin/sh"
	// shellPath is the PATH of a shell, whoever runs it: the agent's own
	// PATH is its service manager's and says nothing of a login.
	shellPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Options configure a Server. The zero value runs the agent's user's login
// shell with no time limits.
type Options struct {
	// Shell is the shell's path; the login shell of the user it runs as
	// (/etc/passwd) when empty, else /bin/sh.
	Shell string
	// User runs the shell as this user (a name or a uid), with its groups,
	// home and login shell: the agent must run as root. Empty runs it as
	// the agent's own user.
	User string
	// Idle ends a session after this long without a byte either way; 0 is
	// no limit.
	Idle time.Duration
	// Max ends a session this long after it started, however busy; 0 is
	// no limit.
	Max time.Duration
	// Grace is how long a hung-up shell has before it is killed;
	// DefaultGrace when 0.
	Grace time.Duration
	// Logger gets the sessions' events; none when nil.
	Logger *slog.Logger
}

// Server serves shells on streams; its methods are safe for concurrent
// use.
type Server struct {
	opts  Options
	login account
	log   *slog.Logger
}

// account is who a shell runs as.
type account struct {
	name, home, shell string
	uid, gid          uint32
	groups            []uint32
	other             bool // not the agent's own user: a credential to set
}

// Errors of New.
var (
	// ErrNotRoot: Options.User given to an agent that cannot switch users.
	ErrNotRoot = errors.New("running the shell as another user needs the agent to run as root")
	// ErrUnsupported: this system has no pseudo-terminals the agent
	// can use.
	ErrUnsupported = errors.New("a shell on a pseudo-terminal is not supported on this system")
)

// New checks opts and finds the user and the shell, so that a mistake is
// told when the agent starts rather than at a viewer's first session.
func New(opts Options) (*Server, error) {
	if opts.Idle < 0 || opts.Max < 0 || opts.Grace < 0 {
		return nil, errors.New("shell: negative time limit")
	}
	if opts.Grace == 0 {
		opts.Grace = DefaultGrace
	}
	if err := supported(); err != nil {
		return nil, err
	}
	acc, err := lookupAccount(opts.User)
	if err != nil {
		return nil, err
	}
	if opts.Shell != "" {
		acc.shell = opts.Shell
	}
	if !filepath.IsAbs(acc.shell) {
		return nil, fmt.Errorf("shell %q: want an absolute path", acc.shell)
	}
	st, err := os.Stat(acc.shell)
	switch {
	case err != nil:
		return nil, fmt.Errorf("shell: %w", err)
	case st.IsDir() || st.Mode().Perm()&0o111 == 0:
		return nil, fmt.Errorf("shell %s: not an executable file", acc.shell)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, login: acc, log: log}, nil
}

// Shell is the path of the shell the server runs; User is the name of
// the user it runs as.
func (s *Server) Shell() string { return s.login.shell }

// User is the name of the user the server's shells run as.
func (s *Server) User() string { return s.login.name }

// Result is how a session ended.
type Result struct {
	// Started says a shell ran: the viewer said hello.
	Started bool
	// Status is the shell's exit status, 128+N for a signal N, as a
	// shell's $? tells it; -1 when it never started.
	Status int
	// Why is set when the server ended the session rather than the shell
	// ending it: a time limit, the viewer gone, ctx.
	Why string
	// In and Out count the terminal bytes from and to the viewer.
	In, Out int64
	// Err is what failed, if anything did.
	Err error
}

// lookupAccount finds the user named (by name or uid) in /etc/passwd, or
// the agent's own user when name is empty; a user /etc/passwd lacks runs
// /bin/sh in /.
func lookupAccount(name string) (account, error) {
	uid := os.Getuid()
	if name == "" {
		acc := account{uid: uint32(uid), gid: uint32(os.Getgid()), shell: fallbackShell, home: "/"}
		if e, ok := passwdEntry(func(e passwd) bool { return e.uid == acc.uid }); ok {
			acc.name, acc.home = e.name, e.home
			if e.shell != "" {
				acc.shell = e.shell
			}
		}
		if acc.name == "" {
			acc.name = strconv.Itoa(uid)
		}
		if h := os.Getenv("HOME"); acc.home == "/" && h != "" {
			acc.home = h
		}
		return acc, nil
	}
	if os.Geteuid() != 0 {
		return account{}, ErrNotRoot
	}
	e, ok := passwdEntry(func(e passwd) bool { return e.name == name || strconv.FormatUint(uint64(e.uid), 10) == name })
	if !ok {
		return account{}, fmt.Errorf("shell user %q: not in /etc/passwd", name)
	}
	acc := account{name: e.name, home: e.home, shell: e.shell, uid: e.uid, gid: e.gid, other: true}
	if acc.shell == "" {
		acc.shell = fallbackShell
	}
	if acc.home == "" {
		acc.home = "/"
	}
	groups, err := groupsOf(e.name, e.gid)
	if err != nil {
		return account{}, fmt.Errorf("shell user %q: %w", name, err)
	}
	acc.groups = groups
	return acc, nil
}

// passwd is one line of /etc/passwd.
type passwd struct {
	name, home, shell string
	uid, gid          uint32
}

// passwdEntry is the first line of /etc/passwd that match takes. The
// standard library's os/user tells no login shell.
func passwdEntry(match func(passwd) bool) (passwd, bool) {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return passwd{}, false
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 7 || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		e := passwd{name: f[0], uid: uint32(uid), gid: uint32(gid), home: f[5], shell: strings.TrimSpace(f[6])}
		if match(e) {
			return e, true
		}
	}
	return passwd{}, false
}

// groupsOf lists the groups of /etc/group that name belongs to, and gid,
// as initgroups(3) does.
func groupsOf(name string, gid uint32) ([]uint32, error) {
	groups := []uint32{gid}
	data, err := os.ReadFile("/etc/group")
	if errors.Is(err, os.ErrNotExist) {
		return groups, nil
	}
	if err != nil {
		return nil, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		g, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil || uint32(g) == gid {
			continue
		}
		for m := range strings.SplitSeq(f[3], ",") {
			if m == name {
				groups = append(groups, uint32(g))
				break
			}
		}
	}
	return groups, nil
}

// environ is the shell's environment: the login's, never the agent's,
// but for the locale, which the viewer's UTF-8 needs.
func (a account) environ() []string {
	env := []string{
		"TERM=xterm-256color",
		"HOME=" + a.home,
		"USER=" + a.name,
		"LOGNAME=" + a.name,
		"SHELL=" + a.shell,
		"PATH=" + shellPath,
	}
	locale := false
	for _, k := range []string{"LANG", "LC_ALL", "LC_CTYPE", "TZ"} {
		if v, ok := os.LookupEnv(k); ok && v != "" {
			env = append(env, k+"="+v)
			locale = locale || k != "TZ"
		}
	}
	if !locale {
		env = append(env, "LANG=C.UTF-8")
	}
	return env
}
