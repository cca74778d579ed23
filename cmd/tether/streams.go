package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tether-io/tether/service"
)

const streamsUsage = `usage: tether streams [list] [--device ID] [--json]
       tether streams kill ID

list (the default) shows the streams open now, on every hub node: device,
stream name, state, age, bytes each way, home node and the stream's ID.

kill ends the open stream ID on whichever node holds it: both sides see it
closed, and its stream-log record says "killed by policy NAME". It takes a
policy with ServiceConnect, the right to open streams.
`

// cmdStreams lists the streams open right now on every hub node, or
// ends one.
func cmdStreams(ctx context.Context, g *globals, args []string) error {
	sub := "list"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	if err := checkSub(g, "streams", sub, streamsUsage); err != nil {
		return err
	}
	fs := g.newFlagSet("streams "+sub, streamsUsage)
	var device *string
	var asJSON *bool
	if sub == "list" {
		device = fs.String("device", "", "only this device's streams")
		asJSON = fs.Bool("json", false, "print a JSON array")
	}
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if sub == "kill" {
		if len(pos) != 1 {
			return errors.New("streams kill needs exactly one stream ID (the last column of tether streams)")
		}
		return killStream(ctx, g, pos[0])
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
	fmt.Fprintln(tw, "DEVICE\tSTREAM\tSTATE\tAGE\tTO-DEVICE\tTO-SERVICE\tNODE\tID")
	now := time.Now()
	for _, st := range list {
		state := "waiting"
		if st.Paired {
			state = "open"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", st.DeviceID, st.Name, state,
			now.Sub(st.Opened).Round(time.Second), st.BytesToDevice, st.BytesToService, st.Node, st.ID)
	}
	return tw.Flush()
}

// killStream ends the open stream id.
func killStream(ctx context.Context, g *globals, id string) error {
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()
	err = c.KillStream(ctx, id)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, service.ErrStreamNotFound):
		return fmt.Errorf("no hub node holds an open stream %s: it ended, or the ID is wrong (tether streams lists the open ones)", id)
	case errors.Is(err, service.ErrUnauthorized):
		return errors.New("unauthorized: ending a stream takes a policy with ServiceConnect (check the connection string)")
	}
	return explainHubError(err, c, "")
}
