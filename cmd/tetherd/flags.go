package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/internal/cliflag"
	"github.com/tether-io/tether/internal/version"
)

type config struct {
	data       string
	listen     string
	mqttListen string
	hostnames  []string
	publicURL  string
	tlsCert    string
	tlsKey     string
	tls        bool
	natsURL    string
	logFormat  string
	logLevel   string
	retention  time.Duration
	metrics    string
	sessions   bool
	record     bool
	cluster    clusterConfig // cluster.go
	limits     hub.Limits    // limits.go
	version    bool          // --version: print it, start nothing

	// source names where a flag's value came from (the flag or its
	// environment variable), for errors found after parsing.
	source func(name string) string
}

// envPrefix makes each flag's environment variable: --mqtt-listen is
// TETHER_MQTT_LISTEN.
const envPrefix = "TETHER_"

const helpIntro = `usage: tetherd [FLAGS]

tetherd is the Tether hub: devices behind NAT keep a connection to it, and
services open TCP streams to them through it (Azure IoT Hub device streams).

Every flag may also be set by an environment variable, TETHER_ and the flag's
name in capitals with _ for - (--mqtt-listen: TETHER_MQTT_LISTEN); a flag
given wins. Help names the variable and says whether it is set, never its
value.

tetherd healthcheck asks a hub running on this machine whether it is
healthy: exit 0 if so, 1 if not (tetherd healthcheck --help).

`

// newFlagSet registers tetherd's flags into c and returns them with their
// groups for the help and the finish that completes c after parsing.
func newFlagSet(c *config) (fs *flag.FlagSet, groups []cliflag.Group, finish func() error) {
	fs = flag.NewFlagSet("tetherd", flag.ContinueOnError)
	var names string
	fs.StringVar(&c.data, "data", "./tether-data", "data `FOLDER`: the CA and server certificate, the registry and the stream logs; created (mode 0700) on first start")
	fs.StringVar(&c.listen, "listen", ":8443", "`ADDR` (HOST:PORT) of HTTPS: REST, streams, MQTT over WebSocket")
	fs.StringVar(&c.mqttListen, "mqtt-listen", ":8883", "`ADDR` (HOST:PORT) of MQTT over TLS, or off")
	fs.StringVar(&names, "hostname", "localhost", "host `NAMES` for the certificate and URLs, comma-separated")
	fs.StringVar(&c.publicURL, "public-url", "", "`URL` streaming URLs point at; default https://{first host name}:{listen port}")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "certificate PEM `FILE` instead of the generated one")
	fs.StringVar(&c.tlsKey, "tls-key", "", "key PEM `FILE` for --tls-cert")
	fs.BoolVar(&c.tls, "tls", true, "serve TLS; false only behind a TLS-terminating proxy")
	fs.StringVar(&c.natsURL, "nats", "", "external NATS `URLS`, comma-separated (nats://a:4222,nats://b:4222); default an embedded server")
	fs.StringVar(&c.logFormat, "log-format", "text", "`FORMAT` of the log on stderr: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "`LEVEL`: debug, info, warn or error")
	fs.StringVar(&c.metrics, "metrics-listen", "off", "`ADDR` of Prometheus /metrics: off, on (127.0.0.1:9464) or HOST:PORT")
	fs.DurationVar(&c.retention, "log-retention", 168*time.Hour, "how long stream-log records are kept")
	fs.BoolVar(&c.record, "record-terminals", false, "record every terminal session (a device's @shell) this node relays, as asciicast v2 in the data folder's recordings/; see docs/security.md")
	fs.BoolVar(&c.sessions, "sessions", true, "serve sessions, many streams on one connection, to Tether's own services and devices; false: they use a connection per stream")
	limitNames, finishLimits := addLimitFlags(fs, &c.limits)
	c.source = func(name string) string { return cliflag.Source(fs, name) }
	finishCluster := addClusterFlags(fs, &c.cluster, c.source)
	cliflag.EnvAll(fs, envPrefix)
	// After EnvAll: no variable may turn a start into printing the
	// version, and a deployment's TETHER_VERSION=0.3.0 (a tag an image
	// carries) must not fail the start as a bad boolean.
	fs.BoolVar(&c.version, "version", false, "print tetherd's version and exit")
	groups = []cliflag.Group{
		{Title: "Listeners", Names: []string{"listen", "mqtt-listen", "metrics-listen", "hostname", "public-url", "sessions"}},
		{Title: "TLS", Names: []string{"tls", "tls-cert", "tls-key"}},
		{Title: "Data", Names: []string{"data", "log-retention", "record-terminals"}},
		{Title: "Cluster (see docs/cluster.md)", Names: []string{"node-name", "cluster-name", "cluster-listen", "cluster-peers", "cluster-secret",
			"cluster-tls-cert", "cluster-tls-key", "cluster-tls-ca", "nats", "nats-ca", "nats-cert", "nats-key", "replicas", "drain-timeout"}},
		{Title: "Limits (see docs/security.md)", Names: limitNames},
		{Title: "Logging", Names: []string{"log-format", "log-level"}},
		{Title: "Information", Names: []string{"version"}},
	}
	return fs, groups, func() error {
		finishLimits()
		if err := finishCluster(); err != nil {
			return err
		}
		c.hostnames = splitNames(names)
		if len(c.hostnames) == 0 {
			return fmt.Errorf("%s needs at least one name", c.from("hostname"))
		}
		return nil
	}
}

// printHelp writes tetherd's help: what it is, then its flags by group.
func printHelp(w io.Writer) {
	fs, groups, _ := newFlagSet(&config{})
	io.WriteString(w, helpIntro)
	cliflag.PrintGroups(w, fs, groups)
}

// parseFlags reads the environment, then args, and checks every value, so
// that a mistake is reported before anything is created. It touches no
// file. -h or --help writes the help to stdout and is flag.ErrHelp;
// --version writes the version there and is errVersion.
func parseFlags(args []string, stdout io.Writer) (*config, error) {
	c := &config{}
	fs, _, finish := newFlagSet(c)
	fs.SetOutput(io.Discard) // errors are returned, help written below
	fs.Usage = func() {}
	envErr := cliflag.ApplyEnv(fs) // reported after the help, which may explain it
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(stdout)
			return nil, err
		}
		return nil, fmt.Errorf("%w (tetherd --help lists the flags)", cliflag.Explain(fs, err))
	}
	if c.version {
		// Whatever else is wrong: one asks for the version of a hub
		// that will not start.
		fmt.Fprintln(stdout, version.Line("tetherd"))
		return nil, errVersion
	}
	if envErr != nil {
		return nil, envErr
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: tetherd takes flags only, or healthcheck first (tetherd --help lists them)", fs.Arg(0))
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// errVersion is parseFlags' answer to --version, which it has printed:
// tetherd exits 0 without starting.
var errVersion = errors.New("version printed")

// from names where the value of the flag name came from: the flag, or its
// environment variable.
func (c *config) from(name string) string {
	if c.source == nil {
		return "--" + name
	}
	return c.source(name)
}

// validate checks what parsing alone does not: addresses, words from a
// list, flags that go together.
func (c *config) validate() error {
	if strings.TrimSpace(c.data) == "" {
		return fmt.Errorf("%s is empty: give the data folder", c.from("data"))
	}
	if _, err := newLogger(c, io.Discard); err != nil {
		return err
	}
	if err := checkAddr(c.from("listen"), c.listen); err != nil {
		return err
	}
	if err := checkAddr(c.from("mqtt-listen"), c.mqttListen, "off"); err != nil {
		return err
	}
	if err := checkAddr(c.from("metrics-listen"), c.metrics, "off", "on"); err != nil {
		return err
	}
	if c.retention <= 0 {
		return fmt.Errorf("%s %v: want a positive duration such as 168h", c.from("log-retention"), c.retention)
	}
	if err := c.cluster.validate(c.natsURL); err != nil {
		return err
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.publicURL == "" {
		_, port, _ := net.SplitHostPort(c.listen) // checked above
		if port == "0" {
			// The port is known once the listener is up: the node names
			// it then.
			return nil
		}
		c.publicURL = "https://" + net.JoinHostPort(c.hostnames[0], port)
	}
	u, err := url.Parse(c.publicURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%s %q must be https://host[:port]", c.from("public-url"), c.publicURL)
	}
	return nil
}

// checkAddr checks a listen address: HOST:PORT (the host may be empty),
// or one of words. A value that is neither gets the likely meant one: off
// for "of", :8443 for "8443".
func checkAddr(from, v string, words ...string) error {
	if slices.Contains(words, v) {
		return nil
	}
	if _, _, err := net.SplitHostPort(v); err == nil {
		return nil
	}
	want := "HOST:PORT"
	if len(words) > 0 {
		want += " or " + strings.Join(words, " or ")
	}
	hint := ""
	if m := cliflag.Closest(v, words); m != "" {
		hint = fmt.Sprintf(" (did you mean %s?)", m)
	} else if v != "" && strings.Trim(v, "0123456789") == "" {
		hint = fmt.Sprintf(" (did you mean :%s, port %s on every address?)", v, v)
	}
	return fmt.Errorf("%s %q: want %s%s", from, v, want, hint)
}
