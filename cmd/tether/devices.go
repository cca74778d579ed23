package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

const devicesUsage = `usage:
  tether devices add ID [--out FILE [--force]]
                                 register a device; prints its connection
                                 string, or writes it to FILE (new, mode 0600)
  tether devices add ID --x509-thumbprint HEX [--x509-thumbprint2 HEX]
                                 register a device that authenticates with its
                                 own certificate (SHA-256 fingerprint, colons ok)
  tether devices add ID --x509-ca
                                 register a device whose certificate is signed
                                 by a CA uploaded with 'tether certificates add'
  tether devices list [--json [--show-keys]]
                                 list devices: id, status, connection state
  tether devices show ID [--show-keys]
                                 show one device as JSON; its keys only with
                                 --show-keys
  tether devices rm ID [--yes]   delete a device, once confirmed on the terminal
  tether devices disable ID      refuse the device: disconnected now, streams end
  tether devices enable ID       let a disabled device connect again
  tether devices rotate-key ID [--secondary] [--out FILE [--force]]
                                 new primary (or secondary) key; prints the
                                 connection string that uses it, or writes it
                                 to FILE
`

func cmdDevices(ctx context.Context, g *globals, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(g.Stderr, devicesUsage)
		return errUsage
	}
	sub, args := args[0], args[1:]
	fs := g.newFlagSet("devices "+sub, devicesUsage)
	var asJSON, secondary, x509CA, showKeys, force, yes *bool
	var thumb1, thumb2, out *string
	switch sub {
	case "add":
		thumb1 = fs.String("x509-thumbprint", "", "`HEX`: SHA-256 fingerprint of the device's own certificate (selfSigned; any case, colons allowed)")
		thumb2 = fs.String("x509-thumbprint2", "", "`HEX`: secondary fingerprint, for rolling the certificate over")
		x509CA = fs.Bool("x509-ca", false, "the device's certificate is signed by a CA uploaded to the hub (certificateAuthority)")
	case "list":
		asJSON = fs.Bool("json", false, "print a JSON array of device documents")
	case "rotate-key":
		secondary = fs.Bool("secondary", false, "rotate the secondary key instead of the primary")
	case "rm":
		yes = fs.Bool("yes", false, "delete without asking (needed when stdin is not a terminal)")
	}
	switch sub {
	case "add", "rotate-key":
		out = fs.String("out", "", "write the connection string to `FILE`, created with mode 0600, instead of stdout; an existing FILE is an error")
		force = fs.Bool("force", false, "with --out, replace FILE if it exists")
	case "list", "show":
		showKeys = fs.Bool("show-keys", false, "show each device's keys in the JSON (left out otherwise)")
	}
	if err := checkSub(g, "devices", sub, devicesUsage); err != nil {
		return err
	}
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	want := 1
	if sub == "list" {
		want = 0
	}
	if len(pos) != want {
		if want == 0 {
			return fmt.Errorf("devices list takes no arguments (got %q)", pos)
		}
		return fmt.Errorf("devices %s needs exactly one device ID", sub)
	}
	if sub == "list" && *showKeys && !*asJSON {
		return errors.New("--show-keys goes with --json: the table shows no keys")
	}
	if force != nil && *force && *out == "" {
		return errors.New("--force goes with --out FILE: it lets FILE be replaced")
	}
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()
	var keyOut *connStrOut
	if out != nil {
		if keyOut, err = newConnStrOut(g, "device", *out, *force); err != nil {
			return err
		}
		defer keyOut.close()
	}

	switch sub {
	case "add":
		var d *wire.Device
		switch {
		case *x509CA && (*thumb1 != "" || *thumb2 != ""):
			return errors.New("--x509-ca and --x509-thumbprint exclude each other: a device has its own certificate or one from a CA")
		case *thumb2 != "" && *thumb1 == "":
			return errors.New("--x509-thumbprint2 needs --x509-thumbprint")
		case *x509CA:
			d, err = c.CreateDeviceCA(ctx, pos[0])
		case *thumb1 != "":
			tps := []string{*thumb1}
			if *thumb2 != "" {
				tps = append(tps, *thumb2)
			}
			for i, tp := range tps {
				if _, err := wire.NormalizeThumbprint(tp); err != nil {
					return fmt.Errorf("%s: %q is not a SHA-256 fingerprint (64 hex digits, colons allowed)", []string{"--x509-thumbprint", "--x509-thumbprint2"}[i], tp)
				}
			}
			d, err = c.CreateDeviceX509(ctx, pos[0], tps...)
		default:
			d, err = c.CreateDevice(ctx, pos[0])
		}
		if err != nil {
			return explainHubError(err, c, pos[0])
		}
		cs := c.DeviceConnectionString(d)
		if cs == "" {
			return fmt.Errorf("device %q was created but the hub returned no key for it", pos[0])
		}
		return keyOut.put(pos[0], cs, true)
	case "list":
		ds, err := c.ListDevices(ctx)
		if err != nil {
			return explainHubError(err, c, "")
		}
		slices.SortFunc(ds, func(a, b wire.Device) int { return strings.Compare(a.DeviceID, b.DeviceID) })
		if *asJSON {
			if !*showKeys {
				for i := range ds {
					hideKeys(&ds[i])
				}
			}
			return writeJSON(g, ds, false)
		}
		tw := tabwriter.NewWriter(g.Stdout, 0, 8, 2, ' ', 0)
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", d.DeviceID, orDash(d.Status), orDash(d.ConnectionState))
		}
		return tw.Flush()
	case "show":
		d, err := c.GetDevice(ctx, pos[0])
		if err != nil {
			return explainHubError(err, c, pos[0])
		}
		if !*showKeys {
			hideKeys(d)
		}
		if err := writeJSON(g, d, true); err != nil {
			return err
		}
		warnTakeovers(g, d)
	case "rm":
		if !*yes {
			if err := confirmRm(ctx, g, c, pos[0]); err != nil {
				return err
			}
		}
		if err := c.DeleteDevice(ctx, pos[0]); err != nil {
			return explainHubError(err, c, pos[0])
		}
	case "disable", "enable":
		if _, err := c.SetDeviceStatus(ctx, pos[0], sub == "enable"); err != nil {
			return explainHubError(err, c, pos[0])
		}
	case "rotate-key":
		d, err := c.RotateKey(ctx, pos[0], *secondary)
		if err != nil {
			return explainHubError(err, c, pos[0])
		}
		cs, err := sas.ParseConnectionString(c.DeviceConnectionString(d))
		if err != nil {
			return fmt.Errorf("device %q: the hub returned no key after the rotation", pos[0])
		}
		if *secondary {
			cs.SharedAccessKey = d.Authentication.SymmetricKey.SecondaryKey
		}
		return keyOut.put(pos[0], cs.String(), true)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSON(g *globals, v any, indent bool) error {
	enc := json.NewEncoder(g.Stdout)
	if indent {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

// parseInterleaved parses flags wherever they appear among the positional
// arguments ("forward dev1 ssh --listen :2222"), which the flag package
// alone stops at. Everything after "--" is positional. Its error is the
// flag package's: globals.parse reports it.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// newServiceClient builds the client every hub command uses from --hub and
// --ca, else the environment, else tether login's config file.
func newServiceClient(g *globals) (*service.Client, error) {
	if err := g.useLogin(); err != nil {
		return nil, err
	}
	return serviceClient(g)
}

// serviceClient builds a client from g's Hub and CA as they are.
func serviceClient(g *globals) (*service.Client, error) {
	if strings.TrimSpace(g.Hub) == "" {
		return nil, errors.New("no hub given: run tether login (see tether login --help), or pass --hub CONNSTR or set TETHER_HUB to a service connection string (HostName=...;SharedAccessKeyName=...;SharedAccessKey=...)")
	}
	conf, err := g.tlsConfig()
	if err != nil {
		if g.caFrom != "" {
			return nil, fmt.Errorf("%s: %w", g.caFrom, err)
		}
		return nil, err
	}
	c, err := service.New(g.Hub, service.Options{TLSConfig: conf, NoSessions: g.noSessions})
	if err != nil {
		from := "--hub"
		if g.hubFrom != "" {
			from = g.hubFrom
		}
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return c, nil
}

// explainHubError turns an SDK error into the one line a user can act on.
// deviceID may be empty when the call named no device.
func explainHubError(err error, c *service.Client, deviceID string) error {
	var (
		ae  *service.APIError
		cve *tls.CertificateVerificationError
		ue  *url.Error
		oe  *net.OpError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, service.ErrDeviceNotFound):
		return fmt.Errorf("device %q not found", deviceID)
	case errors.Is(err, service.ErrDeviceExists):
		return fmt.Errorf("device %q already exists", deviceID)
	case errors.Is(err, service.ErrDeviceOffline):
		if errors.As(err, &ae) && strings.Contains(ae.Message, "disabled") {
			return fmt.Errorf("device %q is disabled: enable it with 'tether devices enable %s'", deviceID, deviceID)
		}
		return fmt.Errorf("device %q is not connected to the hub", deviceID)
	case errors.Is(err, service.ErrTimeout):
		return fmt.Errorf("device %q did not answer in time", deviceID)
	case errors.Is(err, service.ErrThrottled):
		return errors.New("the hub is throttling requests: try again later")
	case errors.Is(err, service.ErrUnauthorized):
		return errors.New("unauthorized: check the connection string (and that its policy has the rights this command needs)")
	case errors.As(err, &cve):
		return explainCert(err, c.HostName())
	case errors.As(err, &oe):
		return fmt.Errorf("hub unreachable at %s: %v", c.HostName(), oe.Err)
	case errors.As(err, &ue):
		return fmt.Errorf("hub unreachable at %s: %v", c.HostName(), ue.Err)
	case errors.As(err, &ae):
		return fmt.Errorf("hub error: %v", ae)
	}
	return err
}
