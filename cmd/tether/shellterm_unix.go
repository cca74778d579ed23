//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"io"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// unixTerminal is a Unix terminal in raw mode, as cfmakeraw(3) sets it,
// with SIGWINCH telling its size changes.
type unixTerminal struct {
	fd      int
	old     *unix.Termios // nil when stdin is no terminal
	winch   chan os.Signal
	changed chan struct{}
	once    sync.Once
}

// openTerminal puts in, when it is a terminal, in raw mode.
func openTerminal(in io.Reader) (localTerminal, error) {
	t := &unixTerminal{fd: -1, changed: make(chan struct{}, 1)}
	f, ok := in.(*os.File)
	if !ok {
		return t, nil
	}
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return t, nil // not a terminal: bytes go as they are
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, ioctlSetTermios, &raw); err != nil {
		return nil, err
	}
	t.fd, t.old = fd, old
	t.winch = make(chan os.Signal, 1)
	signal.Notify(t.winch, unix.SIGWINCH)
	go func() {
		for range t.winch {
			select {
			case t.changed <- struct{}{}:
			default:
			}
		}
	}()
	return t, nil
}

func (t *unixTerminal) size() (rows, cols uint16, ok bool) {
	if t.old == nil {
		return 0, 0, false
	}
	ws, err := unix.IoctlGetWinsize(t.fd, unix.TIOCGWINSZ)
	if err != nil || ws.Row == 0 || ws.Col == 0 {
		return 0, 0, false
	}
	return ws.Row, ws.Col, true
}

func (t *unixTerminal) resized() <-chan struct{} { return t.changed }

func (t *unixTerminal) isTerminal() bool { return t.old != nil }

func (t *unixTerminal) restore() {
	if t.old == nil {
		return
	}
	t.once.Do(func() {
		signal.Stop(t.winch)
		close(t.winch)
		unix.IoctlSetTermios(t.fd, ioctlSetTermios, t.old)
	})
}
