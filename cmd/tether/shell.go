package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/tether-io/tether/wire"
)

const shellUsage = `usage: tether shell DEVICE [STREAM]

Opens a shell on DEVICE in this terminal: the stream STREAM ("shell" when
not given), which the device's agent serves with --allow STREAM=@shell.
The terminal is in raw mode until the shell ends (every key, Ctrl-C
included, goes to the device), the device's window follows this one's
size, and tether exits with the shell's exit status.

When stdin is not a terminal, its bytes are typed into the shell as they
come, and its end types Ctrl-D (end of input at the shell's prompt).
`

// shellHelloWait bounds the wait for the device's hello: a stream that
// says nothing (a plain TCP service that waits for its client) is not a
// shell.
const shellHelloWait = 15 * time.Second

// shellStdin is what tether shell reads; tests replace it.
var shellStdin io.Reader = os.Stdin

// exitCode is an error that sets tether's exit status: the remote
// shell's, which main passes on rather than its own 1.
type exitCode int

func (e exitCode) Error() string { return "the shell exited with status " + strconv.Itoa(int(e)) }

func cmdShell(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("shell", shellUsage)
	noSessions := sessionsFlag(fs)
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if g.noSessions, err = sessionsOff(*noSessions); err != nil {
		return err
	}
	if len(pos) == 1 {
		pos = append(pos, "shell")
	}
	device, stream, err := deviceAndStream(pos, "tether shell DEVICE [STREAM]")
	if err != nil {
		return err
	}
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()
	conn, err := c.OpenStream(ctx, device, stream)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return explainStreamError(err, c, device, stream)
	}
	defer conn.Close()

	r := wire.NewTermReader(conn)
	conn.SetReadDeadline(time.Now().Add(shellHelloWait))
	if err := r.ReadHello(); err != nil {
		return notAShell(err, device, stream)
	}
	conn.SetReadDeadline(time.Time{})

	term, err := openTerminal(shellStdin)
	if err != nil {
		return err
	}
	v := &viewer{conn: conn, in: shellStdin, out: g.Stdout, term: term}
	status, why, err := v.run(ctx, r)
	term.restore()
	switch {
	case err != nil:
		return err
	case why != "":
		// The device ended it: say why, on a line of its own.
		fmt.Fprintf(g.Stderr, "\r\ntether: %s\n", why)
	}
	if status != 0 {
		return exitCode(status)
	}
	return nil
}

// notAShell explains a stream that did not greet as a terminal stream.
func notAShell(err error, device, stream string) error {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("stream %q of device %q sent nothing within %v: it is not a shell (the agent serves a shell with --allow %s=%s)", stream, device, shellHelloWait, stream, shellTarget)
	case errors.Is(err, wire.ErrNotTerminal), errors.Is(err, io.EOF):
		return fmt.Errorf("stream %q of device %q is not a shell: its agent connects it to a port (--allow %s=HOST:PORT; tether forward or pipe use it); a shell is --allow NAME=%s", stream, device, stream, shellTarget)
	}
	return fmt.Errorf("stream %q of device %q: %w", stream, device, err)
}

// localTerminal is the terminal tether shell runs in, when stdin is one.
type localTerminal interface {
	// size is the window's rows and columns; ok false when unknown.
	size() (rows, cols uint16, ok bool)
	// resized gets a value each time the window changes size.
	resized() <-chan struct{}
	// isTerminal says stdin is a terminal, now in raw mode.
	isTerminal() bool
	// restore puts the terminal back as it was; safe to call again.
	restore()
}

// viewer is tether shell's end of a terminal stream.
type viewer struct {
	conn net.Conn
	in   io.Reader
	out  io.Writer
	term localTerminal

	mu sync.Mutex // one frame at a time on conn
}

func (v *viewer) send(b []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, err := v.conn.Write(b)
	return err
}

// run greets the device, relays until the device sends the shell's
// status, and returns it with why the device ended the shell, if it did.
func (v *viewer) run(ctx context.Context, r *wire.TermReader) (status int, why string, err error) {
	rows, cols, ok := v.term.size()
	if !ok {
		rows, cols = 24, 80
	}
	if err := v.send(append(wire.TermHelloFrame(), wire.TermResizeFrame(rows, cols)...)); err != nil {
		return 0, "", fmt.Errorf("starting the shell: %w", err)
	}
	done := make(chan struct{})
	defer close(done)
	stop := context.AfterFunc(ctx, func() { v.conn.Close() })
	defer stop()
	go v.sendSizes(done)
	go v.sendKeys(done)
	for {
		typ, p, err := r.Next()
		if err != nil {
			if ctx.Err() != nil {
				return 0, "", nil
			}
			return 0, "", fmt.Errorf("the stream ended before the shell did: %w", err)
		}
		switch typ {
		case wire.TermData:
			if _, err := v.out.Write(p); err != nil {
				return 0, "", err
			}
		case wire.TermExit:
			st, why, err := wire.ParseTermExit(p)
			if err != nil {
				return 0, "", err
			}
			if st < 0 || st > 255 {
				st = 255
			}
			return int(st), why, nil
		}
	}
}

// sendSizes sends the window's size each time it changes.
func (v *viewer) sendSizes(done <-chan struct{}) {
	for {
		select {
		case <-v.term.resized():
		case <-done:
			return
		}
		if rows, cols, ok := v.term.size(); ok {
			if v.send(wire.TermResizeFrame(rows, cols)) != nil {
				return
			}
		}
	}
}

// sendKeys sends what stdin gives as it comes. The end of a stdin that is
// no terminal types Ctrl-D, which ends a shell waiting at its prompt.
func (v *viewer) sendKeys(done <-chan struct{}) {
	buf := make([]byte, wire.TermHeaderLen+32<<10)
	for {
		n, err := v.in.Read(buf[wire.TermHeaderLen:])
		if n > 0 {
			buf[0], buf[1], buf[2] = wire.TermData, byte(n>>8), byte(n)
			if v.send(buf[:wire.TermHeaderLen+n]) != nil {
				return
			}
		}
		select {
		case <-done:
			return
		default:
		}
		if err != nil {
			if errors.Is(err, io.EOF) && !v.term.isTerminal() {
				v.send(wire.AppendTermFrame(nil, wire.TermData, []byte{4}))
			}
			return
		}
	}
}
