package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"time"

	"github.com/tether-io/tether/sas"
)

const consoleUsage = `usage: tether console [--ttl DURATION] [--no-open]

Prints a link that signs in to the hub's web console as the access policy
of the hub's connection string (tether login, --hub or TETHER_HUB), with a
token valid for --ttl, and opens it in the browser when a desktop is there
(DISPLAY or WAYLAND_DISPLAY set, and xdg-open found).

The token rides in the link's fragment (after #), which a browser never
sends: it reaches neither the hub's request log nor a proxy's. Until it
expires, whoever holds the link acts as the policy: share it as you would
the key. The console never sees the key itself.
`

// maxConsoleTTL bounds --ttl: a link is for a sitting, not a standing
// credential.
const maxConsoleTTL = 24 * time.Hour

func cmdConsole(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("console", consoleUsage)
	ttl := fs.Duration("ttl", time.Hour, "how long the link signs in for, at most 24h (`DURATION`)")
	noOpen := fs.Bool("no-open", false, "print the link only, even on a desktop")
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("console takes no arguments (got %q)", pos)
	}
	if *ttl <= 0 || *ttl > maxConsoleTTL {
		return fmt.Errorf("--ttl %v: want a duration above 0 and at most %v", *ttl, maxConsoleTTL)
	}
	if err := g.useLogin(); err != nil {
		return err
	}
	link, err := consoleLink(g, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(g.Stdout, link)
	if g.CA != "" {
		fmt.Fprintf(g.Stderr, "The hub's certificate is signed by %s: a browser that does not trust it warns before the console opens.\n", g.CA)
	}
	if *noOpen || !hasDesktop() {
		return nil
	}
	opener, err := exec.LookPath("xdg-open")
	if err != nil {
		return nil // a desktop without xdg-open: the link is printed
	}
	// xdg-open may wait for the browser it starts; the link is out, so
	// tether need not.
	cmd := exec.Command(opener, link)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(g.Stderr, "tether: opening the link with xdg-open: %v\n", err)
		return nil
	}
	return cmd.Process.Release()
}

// consoleLink is https://HOST/console/#token=..., HOST as the connection
// string names the hub.
func consoleLink(g *globals, ttl time.Duration) (string, error) {
	if g.Hub == "" {
		return "", errors.New("no hub given: run tether login (see tether login --help), or pass --hub CONNSTR or set TETHER_HUB to an access policy's connection string")
	}
	cs, err := sas.ParseConnectionString(g.Hub)
	if err != nil {
		return "", fmt.Errorf("%s: %w", hubSource(g), err)
	}
	if cs.IsDevice() {
		return "", fmt.Errorf("%s is a device's connection string: the console signs in with an access policy's (SharedAccessKeyName=...)", hubSource(g))
	}
	tok, err := cs.Token(ttl)
	if err != nil {
		return "", err
	}
	u := url.URL{Scheme: "https", Host: cs.HostName, Path: "/console/", Fragment: "token=" + tok}
	return u.String(), nil
}

func hubSource(g *globals) string {
	if g.hubFrom != "" {
		return g.hubFrom
	}
	return "--hub"
}

// hasDesktop reports whether a graphical session is there to open a
// browser in.
func hasDesktop() bool {
	return os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != ""
}
