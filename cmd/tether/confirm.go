package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// confirmStdin is where devices rm reads its answer; tests replace it.
var confirmStdin io.Reader = os.Stdin

// isTerminal reports whether r is a terminal someone can answer on: a
// character device. /dev/null is one too; its answer is the end of input,
// which confirms nothing.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// confirmRm asks on the terminal before device id is deleted: its keys go
// with it and cannot be had back, and a slip in an ID should not cost a
// device its place in the fleet. Without a terminal it refuses at once
// rather than wait for an answer no one can give: a script says --yes.
func confirmRm(ctx context.Context, g *globals, c *service.Client, id string) error {
	if !isTerminal(confirmStdin) {
		return fmt.Errorf("device %q not deleted: stdin is not a terminal to ask on; pass --yes to delete without asking", id)
	}
	what := "device " + id
	d, err := c.GetDevice(ctx, id)
	switch {
	case err == nil && d.ConnectionState == wire.StateConnected:
		what += ", connected now,"
	case errors.Is(err, service.ErrDeviceNotFound):
		return explainHubError(err, c, id)
	}
	fmt.Fprintf(g.Stderr, "Delete %s? Its keys stop working at once and cannot be restored. [y/N] ", what)
	answer := make(chan string, 1)
	go func() {
		// Left blocked on a terminal if ctx ends first; the process is
		// about to exit then.
		line, _ := bufio.NewReader(confirmStdin).ReadString('\n')
		answer <- line
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(g.Stderr)
		return fmt.Errorf("device %q not deleted", id)
	case line := <-answer:
		switch strings.ToLower(strings.TrimSpace(line)) {
		case "y", "yes":
			return nil
		case "":
			if !strings.HasSuffix(line, "\n") {
				fmt.Fprintln(g.Stderr)
			}
		}
		return fmt.Errorf("device %q not deleted", id)
	}
}
