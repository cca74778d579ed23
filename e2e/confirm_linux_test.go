package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-io/tether/service"
)

// openPTY opens a pseudo-terminal pair: what a program reads from tty
// was typed into term.
func openPTY(t *testing.T) (term, tty *os.File) {
	t.Helper()
	term, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { term.Close() })
	if err := unix.IoctlSetPointerInt(int(term.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(term.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return term, tty
}

// rmOnTerminal runs tether devices rm id with a terminal for stdin, on
// which answer is typed, and returns what it printed on stderr.
func rmOnTerminal(t *testing.T, env []string, tether, id, answer string) (string, error) {
	t.Helper()
	term, tty := openPTY(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tether, "devices", "rm", id)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Typed ahead: the terminal keeps the line until it is read.
	if _, err := term.WriteString(answer + "\n"); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("devices rm %s on a terminal did not finish: %s", id, stderr.String())
	}
	return stderr.String(), err
}

// TestDevicesRmConfirms: on a terminal, devices rm asks and deletes only
// on yes; without one it refuses at once unless told --yes, rather than
// wait for an answer no one can give.
func TestDevicesRmConfirms(t *testing.T) {
	t.Parallel()
	_, tether := buildBinaries(t)
	h := startHub(t, hubOptions{})
	env := cliEnv(h)
	svc := h.service(t)
	for _, id := range []string{"dev1", "dev2"} {
		h.addDevice(t, id)
	}
	exists := func(id string) bool {
		t.Helper()
		_, err := svc.GetDevice(context.Background(), id)
		if err != nil && !errors.Is(err, service.ErrDeviceNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	// No terminal: refused at once, whatever stdin holds.
	r := runTool(t, 30*time.Second, env, strings.NewReader("y\n"), tether, "devices", "rm", "dev1")
	if r.err == nil || !strings.Contains(string(r.stderr), "not a terminal") || !strings.Contains(string(r.stderr), "--yes") || r.took > 10*time.Second {
		t.Errorf("rm with a pipe for stdin: %v after %v: %s", r.err, r.took, r.stderr)
	}
	if !exists("dev1") {
		t.Fatal("dev1 was deleted without a confirmation")
	}

	// A terminal: no is no, yes deletes.
	out, err := rmOnTerminal(t, env, tether, "dev1", "n")
	if err == nil || !strings.Contains(out, "Delete device dev1?") || !strings.Contains(out, "not deleted") || !exists("dev1") {
		t.Errorf("answering n: %v, dev1 exists %v: %s", err, exists("dev1"), out)
	}
	out, err = rmOnTerminal(t, env, tether, "dev1", "y")
	if err != nil || !strings.Contains(out, "Delete device dev1?") || exists("dev1") {
		t.Errorf("answering y: %v, dev1 exists %v: %s", err, exists("dev1"), out)
	}
	// A device that is not there is said so, with no question.
	out, err = rmOnTerminal(t, env, tether, "dev1", "y")
	if err == nil || strings.Contains(out, "Delete") || !strings.Contains(out, "not found") {
		t.Errorf("rm of a deleted device: %v: %s", err, out)
	}

	// --yes: no question, from a script.
	r = runTool(t, 30*time.Second, env, nil, tether, "devices", "rm", "dev2", "--yes")
	r.mustSucceed(t, "devices rm dev2 --yes")
	if exists("dev2") {
		t.Error("dev2 not deleted by rm --yes")
	}
}
