package main

import (
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/windows"
)

// consoleTerminal is a Windows console with virtual-terminal input and
// output: keys arrive as the escape sequences a Unix terminal sends, and
// the device's output is drawn as a Unix terminal draws it. Windows tells
// no size change, so the size is looked at twice a second.
type consoleTerminal struct {
	in, out       windows.Handle
	oldIn, oldOut uint32
	raw           bool
	changed       chan struct{}
	stop          chan struct{}
	once          sync.Once
}

func openTerminal(in io.Reader) (localTerminal, error) {
	t := &consoleTerminal{changed: make(chan struct{}, 1), stop: make(chan struct{})}
	f, ok := in.(*os.File)
	if !ok {
		return t, nil
	}
	t.in, t.out = windows.Handle(f.Fd()), windows.Handle(os.Stdout.Fd())
	if windows.GetConsoleMode(t.in, &t.oldIn) != nil || windows.GetConsoleMode(t.out, &t.oldOut) != nil {
		return t, nil
	}
	rawIn := t.oldIn&^(windows.ENABLE_ECHO_INPUT|windows.ENABLE_LINE_INPUT|windows.ENABLE_PROCESSED_INPUT) | windows.ENABLE_VIRTUAL_TERMINAL_INPUT
	if err := windows.SetConsoleMode(t.in, rawIn); err != nil {
		return nil, err
	}
	windows.SetConsoleMode(t.out, t.oldOut|windows.ENABLE_VIRTUAL_TERMINAL_PROCESSING|windows.DISABLE_NEWLINE_AUTO_RETURN)
	t.raw = true
	go t.watch()
	return t, nil
}

func (t *consoleTerminal) watch() {
	rows, cols, _ := t.size()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-t.stop:
			return
		}
		if r, c, ok := t.size(); ok && (r != rows || c != cols) {
			rows, cols = r, c
			select {
			case t.changed <- struct{}{}:
			default:
			}
		}
	}
}

func (t *consoleTerminal) size() (rows, cols uint16, ok bool) {
	if !t.raw {
		return 0, 0, false
	}
	var info windows.ConsoleScreenBufferInfo
	if windows.GetConsoleScreenBufferInfo(t.out, &info) != nil {
		return 0, 0, false
	}
	w := info.Window
	return uint16(w.Bottom - w.Top + 1), uint16(w.Right - w.Left + 1), true
}

func (t *consoleTerminal) resized() <-chan struct{} { return t.changed }

func (t *consoleTerminal) isTerminal() bool { return t.raw }

func (t *consoleTerminal) restore() {
	if !t.raw {
		return
	}
	t.once.Do(func() {
		close(t.stop)
		windows.SetConsoleMode(t.in, t.oldIn)
		windows.SetConsoleMode(t.out, t.oldOut)
	})
}
