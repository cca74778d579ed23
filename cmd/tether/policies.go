package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

const policiesUsage = `usage:
  tether policies list [--json]   list the hub's access policies: name and rights
  tether policies show NAME [--secondary] [--out FILE [--force]]
                                  print the policy's connection string (with its
                                  primary key, or its secondary), or write it to
                                  FILE (new, mode 0600)
  tether policies add NAME --rights RIGHT,RIGHT... [--out FILE [--force]]
                                  add a policy; RIGHTs from RegistryRead,
                                  RegistryWrite, ServiceConnect, DeviceConnect;
                                  prints its connection string, or writes it
                                  to FILE
  tether policies rm NAME         remove a policy: its connection strings stop
                                  working, the streams and sessions they opened end
  tether policies rotate-key NAME [--secondary] [--out FILE [--force]]
                                  new primary (or secondary) key: the old one stops
                                  working, what it opened ends; prints the
                                  connection string with the new key, or
                                  writes it to FILE

Hand out the least a program needs: 'service' (ServiceConnect) for forward
and pipe, 'registryRead' to watch devices. Managing policies takes an owner
policy, one with every right, such as iothubowner.
`

func cmdPolicies(ctx context.Context, g *globals, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(g.Stderr, policiesUsage)
		return errUsage
	}
	sub, args := args[0], args[1:]
	fs := g.newFlagSet("policies "+sub, policiesUsage)
	var asJSON, secondary, force *bool
	var rights, out *string
	switch sub {
	case "list":
		asJSON = fs.Bool("json", false, "print a JSON array (names and rights, no keys)")
	case "show":
		secondary = fs.Bool("secondary", false, "print the connection string with the secondary key")
	case "rotate-key":
		secondary = fs.Bool("secondary", false, "rotate the secondary key instead of the primary")
	case "add":
		rights = fs.String("rights", "", "the policy's `RIGHTS`, comma-separated: RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect")
	}
	switch sub {
	case "show", "add", "rotate-key":
		out = fs.String("out", "", "write the connection string to `FILE`, created with mode 0600, instead of stdout; an existing FILE is an error")
		force = fs.Bool("force", false, "with --out, replace FILE if it exists")
	}
	if err := checkSub(g, "policies", sub, policiesUsage); err != nil {
		return err
	}
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case sub == "list" && len(pos) != 0:
		return fmt.Errorf("policies list takes no arguments (got %q)", pos)
	case sub != "list" && len(pos) != 1:
		return fmt.Errorf("policies %s needs exactly one policy NAME", sub)
	case sub == "add" && *rights == "":
		return errors.New("policies add needs --rights, e.g. --rights ServiceConnect (RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect)")
	case force != nil && *force && *out == "":
		return errors.New("--force goes with --out FILE: it lets FILE be replaced")
	}
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()
	var keyOut *connStrOut
	if out != nil {
		if keyOut, err = newConnStrOut(g, "policy", *out, *force); err != nil {
			return err
		}
		defer keyOut.close()
	}

	name := ""
	if len(pos) == 1 {
		name = pos[0]
	}
	switch sub {
	case "list":
		list, err := c.ListPolicies(ctx)
		if err != nil {
			return explainPolicyError(err, c, "")
		}
		if *asJSON {
			return writeJSON(g, list, false)
		}
		tw := tabwriter.NewWriter(g.Stdout, 0, 8, 2, ' ', 0)
		for _, p := range list {
			fmt.Fprintf(tw, "%s\t%s\n", p.KeyName, p.Rights)
		}
		return tw.Flush()
	case "rm":
		if err := c.DeletePolicy(ctx, name); err != nil {
			return explainPolicyError(err, c, name)
		}
		return nil
	}
	var p *wire.AccessPolicy
	switch sub {
	case "show":
		p, err = c.GetPolicy(ctx, name)
	case "add":
		p, err = c.CreatePolicy(ctx, name, *rights)
	case "rotate-key":
		p, err = c.RotatePolicyKey(ctx, name, *secondary)
	}
	if err != nil {
		return explainPolicyError(err, c, name)
	}
	cs := c.PolicyConnectionString(p, secondary != nil && *secondary)
	if cs == "" {
		return fmt.Errorf("policy %q: the hub returned no key", name)
	}
	return keyOut.put(name, cs, sub != "show")
}

// explainPolicyError is explainHubError for policy calls, whose 404 is
// about a policy, whose 400 says why the hub refused, and whose 401 is
// most often a connection string that is not an owner's.
func explainPolicyError(err error, c *service.Client, name string) error {
	var ae *service.APIError
	switch {
	case errors.Is(err, service.ErrPolicyNotFound):
		return fmt.Errorf("policy %q not found", name)
	case errors.Is(err, service.ErrPolicyExists):
		return fmt.Errorf("policy %q already exists", name)
	case errors.Is(err, service.ErrUnauthorized):
		return errors.New("unauthorized: managing access policies takes the connection string of an owner policy (every right), such as iothubowner's")
	case errors.As(err, &ae) && ae.StatusCode == 400:
		return fmt.Errorf("the hub refused: %s", ae.Message)
	}
	return explainHubError(err, c, "")
}
