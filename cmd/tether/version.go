package main

import (
	"context"
	"fmt"

	"github.com/tether-io/tether/internal/version"
)

const versionUsage = `usage: tether version

Prints this tether's version, the commit and date it was built from when
known, the Go version that built it and its platform:

  tether 0.3.0 (commit abc1234, built 2026-12-06T10:00:00Z, go1.26.8, linux/amd64)

The agent tells the hub the same version when it connects (tether devices
show ID: deviceClientType); tetherd --version prints the hub's.
`

// cmdVersion is "tether version". It reaches no hub: it must answer on a
// device whose hub is down, which is when one asks.
func cmdVersion(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("version", versionUsage)
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("version takes no arguments (got %q)", pos)
	}
	fmt.Fprintln(g.Stdout, version.Line("tether"))
	return nil
}
