package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"
)

const streamsUsage = `usage: tether streams [--device ID] [--json]

Lists the streams open now, on every hub node: device, stream name, state,
age and bytes each way.
`

// cmdStreams lists the streams open right now on every hub node.
func cmdStreams(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("streams", streamsUsage)
	device := fs.String("device", "", "only this device's streams")
	asJSON := fs.Bool("json", false, "print a JSON array")
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("streams takes no arguments (got %q); use --device ID", pos)
	}
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.Streams(ctx, *device)
	if err != nil {
		return explainHubError(err, c, *device)
	}
	if *asJSON {
		return writeJSON(g, list, false)
	}
	tw := tabwriter.NewWriter(g.Stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSTREAM\tSTATE\tAGE\tTO-DEVICE\tTO-SERVICE\tNODE")
	now := time.Now()
	for _, st := range list {
		state := "waiting"
		if st.Paired {
			state = "open"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", st.DeviceID, st.Name, state,
			now.Sub(st.Opened).Round(time.Second), st.BytesToDevice, st.BytesToService, st.Node)
	}
	return tw.Flush()
}
