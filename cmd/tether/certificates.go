package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/tether-io/tether/service"
)

const certificatesUsage = `usage:
  tether certificates add NAME FILE.pem   upload a CA certificate: devices added
                                          with --x509-ca whose certificates it
                                          signed can connect
  tether certificates list [--json]       list the uploaded CA certificates
  tether certificates show NAME           show one as JSON, PEM included
  tether certificates rm NAME             delete one: the devices it vouched for
                                          are refused from their next connection
`

func cmdCertificates(ctx context.Context, g *globals, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(g.Stderr, certificatesUsage)
		return errUsage
	}
	sub, args := args[0], args[1:]
	fs := g.newFlagSet("certificates "+sub, certificatesUsage)
	var asJSON *bool
	want := 1
	switch sub {
	case "add":
		want = 2
	case "list":
		asJSON = fs.Bool("json", false, "print a JSON array")
		want = 0
	}
	if err := checkSub(g, "certificates", sub, certificatesUsage); err != nil {
		return err
	}
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != want {
		switch sub {
		case "add":
			return errors.New("certificates add needs a NAME and a PEM FILE")
		case "list":
			return fmt.Errorf("certificates list takes no arguments (got %q)", pos)
		}
		return fmt.Errorf("certificates %s needs exactly one NAME", sub)
	}
	var pem []byte
	if sub == "add" {
		// Read before dialing, so that a wrong path fails at once.
		if pem, err = os.ReadFile(pos[1]); err != nil {
			return fmt.Errorf("reading the certificate: %w", err)
		}
	}
	c, err := newServiceClient(g)
	if err != nil {
		return err
	}
	defer c.Close()

	switch sub {
	case "add":
		ca, err := c.UploadCertificate(ctx, pos[0], string(pem))
		if err != nil {
			return explainCertError(err, c, pos[0])
		}
		fmt.Fprintf(g.Stdout, "%s\t%s\tSHA-256 %s\texpires %s\n", ca.Name, ca.Subject, ca.Thumbprint, ca.Expiry.Format("2006-01-02"))
	case "list":
		list, err := c.ListCertificates(ctx)
		if err != nil {
			return explainCertError(err, c, "")
		}
		if *asJSON {
			return writeJSON(g, list, false)
		}
		tw := tabwriter.NewWriter(g.Stdout, 0, 8, 2, ' ', 0)
		for _, ca := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ca.Name, ca.Subject, ca.Expiry.Format("2006-01-02"), ca.Thumbprint)
		}
		return tw.Flush()
	case "show":
		ca, err := c.GetCertificate(ctx, pos[0])
		if err != nil {
			return explainCertError(err, c, pos[0])
		}
		return writeJSON(g, ca, true)
	case "rm":
		if err := c.DeleteCertificate(ctx, pos[0]); err != nil {
			return explainCertError(err, c, pos[0])
		}
	}
	return nil
}

// explainCertError is explainHubError for certificate calls, whose 404
// is about a certificate, not a device.
func explainCertError(err error, c *service.Client, name string) error {
	if errors.Is(err, service.ErrCertificateNotFound) {
		return fmt.Errorf("certificate %q not found", name)
	}
	var ae *service.APIError
	if errors.As(err, &ae) && ae.StatusCode == 400 {
		return fmt.Errorf("the hub refused the certificate: %s", ae.Message)
	}
	return explainHubError(err, c, "")
}
