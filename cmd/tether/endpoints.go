package main

import (
	"context"
	"fmt"
)

func cmdEndpoints(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("endpoints", "usage: tether endpoints\n\nPrints the hub's streaming endpoints, one a line.\n")
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("endpoints takes no arguments (got %q)", pos)
	}
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()
	eps, err := c.StreamingEndpoints(ctx)
	if err != nil {
		return explainHubError(err, c, "")
	}
	for _, e := range eps {
		fmt.Fprintln(g.Stdout, e)
	}
	return nil
}
