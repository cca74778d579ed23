package main

import (
	"context"
	"errors"
)

// cmdPipe is being written.
func cmdPipe(ctx context.Context, g *globals, args []string) error {
	return errors.New("pipe: not yet")
}
