package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/tether-io/tether/internal/cliflag"
)

// The agent reads its settings from four places; the first that gives a
// setting wins: a flag, an environment variable, the --config file, the
// default. An empty environment variable counts as unset, as TETHER_DEVICE
// always has. --allow, TETHER_ALLOW and the file's allow replace each
// other whole rather than merging, so that what a device exposes is read
// in one place. The connection string comes as itself (device) or in a
// file (device-file): two forms of one setting, so that a stronger source
// giving either replaces both, and one source giving both is a mistake.
// Each setting is listed once, in agentSettings; its variable and its key
// in the file follow from its flag's name.

// Agent defaults.
const (
	defaultTransport = "ws"
	// defaultKeepAlive with the device SDK's ping timeout (10 s) notices a
	// dead link in about 30 s, half a load balancer's usual 60 s idle cut.
	defaultKeepAlive = 20 * time.Second
	defaultLogFormat = "text"
	defaultLogLevel  = "info"
	// maxKeepAlive is MQTT's limit: the keep-alive is a 16-bit count of
	// seconds.
	maxKeepAlive = 65535 * time.Second
)

// agentFile is the TOML file of tether agent --config. Keys are the flags'
// names with _ for -; any other key is an error, so that a typo does not
// silently leave a setting at its default.
type agentFile struct {
	Device     string    `toml:"device"`
	DeviceFile string    `toml:"device_file"`
	CA         string    `toml:"ca"`
	Cert       string    `toml:"cert"`
	Key        string    `toml:"key"`
	Allow      fileAllow `toml:"allow"`
	Transport  string    `toml:"transport"`
	MQTTAddr   string    `toml:"mqtt_addr"`
	Hubs       fileHubs  `toml:"hubs"`
	KeepAlive  string    `toml:"keepalive"`
	LogFormat  string    `toml:"log_format"`
	LogLevel   string    `toml:"log_level"`
	Shell      string    `toml:"shell"`
	ShellUser  string    `toml:"shell_user"`
	ShellIdle  string    `toml:"shell_idle"`
	ShellMax   string    `toml:"shell_max"`
}

// fileAllow takes allow as a table (ssh = "127.0.0.1:22") or as an array
// of "NAME=HOST:PORT" strings, the flag's form; it holds NAME=HOST:PORT.
type fileAllow []string

func (a *fileAllow) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case map[string]any:
		for _, name := range slices.Sorted(maps.Keys(v)) {
			target, ok := v[name].(string)
			if !ok {
				return fmt.Errorf("allow.%s: want a \"HOST:PORT\" string", name)
			}
			*a = append(*a, name+"="+target)
		}
	case []any:
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("allow[%d]: want a \"NAME=HOST:PORT\" string", i)
			}
			*a = append(*a, s)
		}
	default:
		return errors.New(`allow: want a table (ssh = "127.0.0.1:22") or an array (["ssh=127.0.0.1:22"])`)
	}
	return nil
}

// loadAgentFile reads and strictly decodes an agent config file. Its
// errors name the file, the line and the key, never a value: the file may
// hold the device's key.
func loadAgentFile(path string) (*agentFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var f agentFile
	keys := agentSettingNames()
	for i, name := range keys {
		keys[i] = agentFileKey(name)
	}
	if err := decodeTOML(path, data, &f, strings.Join(keys, ", ")); err != nil {
		return nil, err
	}
	return &f, nil
}

// agentFileKey is the config file's key of the agent setting whose flag
// is name: the name with _ for -.
func agentFileKey(name string) string { return strings.ReplaceAll(name, "-", "_") }

// source reads the settings of f, the config file at path. A key left
// out or empty gives nothing.
func (f *agentFile) source(path string) agentSource {
	return func(name string) (setting, bool) {
		v, list := f.value(name)
		return setting{value: v, list: list, from: agentFileKey(name) + " in " + path}, v != "" || len(list) > 0
	}
}

// value is what f holds for the setting whose flag is name; allow, a
// list, comes in list.
func (f *agentFile) value(name string) (v string, list []string) {
	switch name {
	case "device":
		return f.Device, nil
	case "device-file":
		return f.DeviceFile, nil
	case "ca":
		return f.CA, nil
	case "cert":
		return f.Cert, nil
	case "key":
		return f.Key, nil
	case "allow":
		return "", f.Allow
	case "transport":
		return f.Transport, nil
	case "mqtt-addr":
		return f.MQTTAddr, nil
	case "hubs":
		return string(f.Hubs), nil
	case "keepalive":
		return f.KeepAlive, nil
	case "log-format":
		return f.LogFormat, nil
	case "log-level":
		return f.LogLevel, nil
	case "shell":
		return f.Shell, nil
	case "shell-user":
		return f.ShellUser, nil
	case "shell-idle":
		return f.ShellIdle, nil
	case "shell-max":
		return f.ShellMax, nil
	}
	// A setting of agentSettings with no key here: the program's mistake.
	panic("agent config file: no key for setting " + name)
}

// decodeTOML strictly decodes data, the config file path, into v: a key
// that v does not have is an error that lists the known ones, so that a
// typo does not silently leave a setting unset. Errors name the file, the
// line and the key, never a value: the file may hold a key, and the TOML
// parser quotes what it found where a value should be. So the syntax is
// checked first, alone, and its errors are told by line and key only;
// what decoding into v says after that (a wrong type, the settings' own
// checks) quotes no value.
func decodeTOML(path string, data []byte, v any, known string) error {
	var pe toml.ParseError
	if _, err := toml.Decode(string(data), new(map[string]any)); errors.As(err, &pe) {
		return fmt.Errorf("config file %s: line %d: not valid TOML (after key %q)", path, pe.Position.Line, pe.LastKey)
	}
	md, err := toml.Decode(string(data), v)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = fmt.Sprintf("%q", k.String())
		}
		return fmt.Errorf("config file %s: unknown key %s (known: %s)", path, strings.Join(keys, ", "), known)
	}
	return nil
}

// agentConfig is what the agent runs with, every source applied.
type agentConfig struct {
	Device    string
	CA        string
	Cert, Key string // PEM files of the device's X.509 client certificate
	Allow     allowList
	Transport string
	MQTTAddr  string
	Hubs      []string // replaces the connection string's HostName when set
	KeepAlive time.Duration
	LogFormat string
	LogLevel  slog.Level
	Shell     shellConfig // for streams allowed as @shell

	// DeviceFrom says where Device came from: a flag, a variable, a key
	// of the config file, each with the device file's path if it came in
	// one.
	DeviceFrom string

	// File is the config file read, if any; FileExposed says it holds the
	// device key and others may read it.
	File        string
	FileExposed bool
}

// agentFlags are the agent's flags as parsed; set names those given on
// the command line.
type agentFlags struct {
	fs    *flag.FlagSet
	allow allowList
	set   map[string]bool
}

// addAgentFlags registers the agent's flags. Their defaults are shown in
// the help but applied only when no other source gives the setting; the
// help names each one's environment variable, never its value.
func addAgentFlags(fs *flag.FlagSet) *agentFlags {
	f := &agentFlags{fs: fs, allow: allowList{}}
	fs.String("config", "", "`FILE`: TOML file of settings; flags and environment variables win over it")
	fs.String("device", "", "device connection string (`CONNSTR`); prefer --device-file or the environment variable to the flag, which other users see in ps")
	fs.String("device-file", "", "`FILE` holding the device connection string, as tether devices add --out writes it; refused if others may read it (mode 0600)")
	fs.String("cert", "", "`FILE`: PEM certificate of an X.509 device (CN = its ID), with --key")
	fs.String("key", "", "`FILE`: PEM private key of --cert")
	fs.Var(f.allow, "allow", "`NAME=HOST:PORT`: connect streams named NAME to HOST:PORT (repeatable; the environment variable is comma-separated)")
	fs.String("transport", defaultTransport, "how to reach the hub: ws (MQTT over WebSocket, HTTPS port) or tls (MQTT over TLS)")
	fs.String("mqtt-addr", "", "`HOST:PORT` of MQTT over TLS; the hub's host, port 8883 when not given")
	fs.String("hubs", "", "`HOST:PORT,...`: hub nodes to connect to instead of the connection string's HostName, tried in random order on each (re)connect")
	fs.Duration("keepalive", defaultKeepAlive, "MQTT keep-alive: ping the hub after this long without traffic, whole seconds")
	fs.String("log-format", defaultLogFormat, "log format on stderr: text or json")
	fs.String("log-level", defaultLogLevel, "debug, info, warn or error")
	addShellFlags(fs)
	// Every setting has its flag (Env panics on a name with none) and its
	// variable.
	for name, env := range agentEnvs() {
		if name != "ca" { // a global flag, marked with the others
			cliflag.Env(fs, name, env)
		}
	}
	return f
}

// setting is one raw value and where it came from, for error messages; a
// zero setting is one that no source gave. allow, a list, is in list.
type setting struct {
	value string
	list  []string
	from  string
}

// agentSettings are the agent's settings as its sources give them, before
// they are checked. Its fields are the one list of the settings: each
// source is read through it, a setting by its flag's name, from which its
// environment variable (agentEnvName) and its key in the config file
// (agentFileKey) follow, so that a setting is read from every source or
// from none.
type agentSettings struct {
	Device     setting // the connection string itself, or
	DeviceFile setting // a file holding it: two forms of one setting (apply)
	CA         setting
	Cert, Key  setting
	Allow      setting
	Transport  setting
	MQTTAddr   setting
	Hubs       setting
	KeepAlive  setting
	LogFormat  setting
	LogLevel   setting
	Shell      setting
	ShellUser  setting
	ShellIdle  setting
	ShellMax   setting
}

// agentField is one setting of agentSettings and its flag's name.
type agentField struct {
	name string
	v    *setting
}

// fields lists the settings of s, in the order the help lists the
// config file's keys.
func (s *agentSettings) fields() []agentField {
	return []agentField{
		{"device", &s.Device}, {"device-file", &s.DeviceFile}, {"ca", &s.CA}, {"cert", &s.Cert}, {"key", &s.Key},
		{"allow", &s.Allow}, {"transport", &s.Transport}, {"mqtt-addr", &s.MQTTAddr}, {"hubs", &s.Hubs},
		{"keepalive", &s.KeepAlive}, {"log-format", &s.LogFormat}, {"log-level", &s.LogLevel},
		{"shell", &s.Shell}, {"shell-user", &s.ShellUser}, {"shell-idle", &s.ShellIdle}, {"shell-max", &s.ShellMax},
	}
}

// agentSettingNames are the flag names of the agent's settings.
func agentSettingNames() []string {
	var names []string
	for _, f := range new(agentSettings).fields() {
		names = append(names, f.name)
	}
	return names
}

// agentSource is one place the agent's settings come from: what it gives
// the setting whose flag is name, ok false when it gives none.
type agentSource func(name string) (s setting, ok bool)

// apply lays src over s: each setting src gives replaces what a weaker
// source gave. The connection string comes as itself (device) or in a
// file (device-file): either form replaces both, and a source giving
// both is a mistake.
func (s *agentSettings) apply(src agentSource) error {
	dev, hasDev := src("device")
	file, hasFile := src("device-file")
	switch {
	case hasDev && hasFile:
		return fmt.Errorf("%s and %s both give the device's connection string: keep one", dev.from, file.from)
	case hasDev:
		s.Device, s.DeviceFile = dev, setting{}
	case hasFile:
		s.Device, s.DeviceFile = setting{}, file
	}
	for _, f := range s.fields() {
		if f.v == &s.Device || f.v == &s.DeviceFile {
			continue
		}
		if v, ok := src(f.name); ok {
			*f.v = v
		}
	}
	return nil
}

// defaults gives the flags' defaults: what the help shows as a setting's
// default is what the agent runs with when no other source gives it.
func (fl *agentFlags) defaults() agentSource {
	return func(name string) (setting, bool) {
		f := fl.fs.Lookup(name)
		if f == nil || f.DefValue == "" {
			return setting{}, false
		}
		return setting{value: f.DefValue, from: "default"}, true
	}
}

// source gives the flags given on the command line; one given empty
// still replaces what a weaker source gave. ca is the global --ca, which
// already fell back to TETHER_CA.
func (fl *agentFlags) source(ca string) agentSource {
	return func(name string) (setting, bool) {
		switch {
		case name == "ca":
			return setting{value: ca, from: "--ca"}, ca != ""
		case !fl.set[name]:
			return setting{}, false
		case name == "allow":
			return setting{list: fl.allow.entries(), from: "--allow"}, true
		}
		return setting{value: fl.fs.Lookup(name).Value.String(), from: "--" + name}, true
	}
}

// agentEnvName is the environment variable of the agent setting whose
// flag is name: TETHER_ and the name in capitals, with _ for -.
func agentEnvName(name string) string { return cliflag.EnvName("TETHER_", name) }

// agentEnvs yields the flag name and the environment variable of
// --config and of every agent setting (ca's is the global --ca's).
func agentEnvs() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, name := range append([]string{"config"}, agentSettingNames()...) {
			if !yield(name, agentEnvName(name)) {
				return
			}
		}
	}
}

// envSource gives the environment variables getenv reads; an empty one
// counts as unset. TETHER_ALLOW is comma-separated. TETHER_CA is left to
// the global --ca (agentFlags.source).
func envSource(getenv func(string) string) agentSource {
	return func(name string) (setting, bool) {
		env := agentEnvName(name)
		v := getenv(env)
		if v == "" || name == "ca" {
			return setting{}, false
		}
		s := setting{value: v, from: env}
		if name == "allow" {
			s.list = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
		}
		return s, true
	}
}

// resolveAgentConfig applies flags, environment, file and defaults, in that
// order of precedence, and validates the result. ca is the global --ca or
// TETHER_CA, already resolved by the flag parser; getenv reads the
// environment.
func resolveAgentConfig(fl *agentFlags, ca string, getenv func(string) string) (*agentConfig, error) {
	cfg := &agentConfig{}
	// The sources, weakest first: defaults, the file, the environment, the
	// flags. The file is the one --config or TETHER_CONFIG names.
	flags, env := fl.source(ca), envSource(getenv)
	sources := []agentSource{fl.defaults()}
	path, given := flags("config")
	if !given {
		path, _ = env("config")
	}
	if path.value != "" {
		file, err := loadAgentFile(path.value)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%s %s: no such file", path.from, path.value)
			}
			return nil, err
		}
		cfg.File = path.value
		if file.Device != "" {
			if st, err := os.Stat(path.value); err == nil && st.Mode().Perm()&0o077 != 0 {
				cfg.FileExposed = true
			}
		}
		sources = append(sources, file.source(path.value))
	}
	var raw agentSettings
	for _, src := range append(sources, env, flags) {
		if err := raw.apply(src); err != nil {
			return nil, err
		}
	}

	cfg.Allow = allowList{}
	for _, e := range raw.Allow.list {
		if err := cfg.Allow.Set(e); err != nil {
			return nil, fmt.Errorf("%s: %w", raw.Allow.from, err)
		}
	}

	if s := raw.DeviceFile; s.from != "" {
		dev, err := readDeviceFile(s.value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.from, err)
		}
		cfg.Device, cfg.DeviceFrom = dev, s.from+" "+s.value
	} else {
		cfg.Device, cfg.DeviceFrom = raw.Device.value, raw.Device.from
	}
	cfg.CA = raw.CA.value
	cfg.Cert, cfg.Key = raw.Cert.value, raw.Key.value
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, errors.New("--cert and --key go together (env TETHER_CERT and TETHER_KEY, cert and key in the config file)")
	}
	cfg.MQTTAddr = raw.MQTTAddr.value
	switch s := raw.Transport; s.value {
	case "ws", "tls":
		cfg.Transport = s.value
	default:
		return nil, fmt.Errorf("%s %q: want ws or tls", s.from, s.value)
	}
	if cfg.MQTTAddr != "" && cfg.Transport != "tls" {
		return nil, fmt.Errorf("%s is for --transport tls", raw.MQTTAddr.from)
	}
	if s := raw.Hubs; s.value != "" {
		hubs, err := parseHubs(s.value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.from, err)
		}
		if cfg.MQTTAddr != "" {
			return nil, fmt.Errorf("%s and %s both say where to connect: with --transport tls, list the MQTT addresses in hubs", s.from, raw.MQTTAddr.from)
		}
		cfg.Hubs = hubs
	}
	s := raw.KeepAlive
	d, err := time.ParseDuration(s.value)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s %q: want a duration such as 20s", s.from, s.value)
	case d < time.Second || d > maxKeepAlive || d%time.Second != 0:
		// MQTT counts the keep-alive in whole seconds, 1 to 65535.
		return nil, fmt.Errorf("%s %v: want whole seconds from 1s to %v", s.from, d, maxKeepAlive)
	}
	cfg.KeepAlive = d
	s = raw.LogFormat
	if s.value != "text" && s.value != "json" {
		return nil, fmt.Errorf("%s %q: want text or json", s.from, s.value)
	}
	cfg.LogFormat = s.value
	s = raw.LogLevel
	if err := cfg.LogLevel.UnmarshalText([]byte(s.value)); err != nil {
		return nil, fmt.Errorf("%s %q: want debug, info, warn or error", s.from, s.value)
	}
	if cfg.Shell, err = resolveShell(&raw, cfg.Allow); err != nil {
		return nil, err
	}
	return cfg, nil
}

// readDeviceFile reads the device's connection string from path, a file
// only its owner may read when the string holds a key (a certificate
// device's holds none, and its file may be anyone's to read).
func readDeviceFile(path string) (string, error) {
	if path == "" {
		return "", errors.New("no file named")
	}
	data, perm, err := readSmallFile(path)
	if err != nil {
		return "", err
	}
	cs, err := connStrFrom(path, data)
	if err != nil {
		return "", err
	}
	if holdsKey(cs) {
		if err := checkPrivate(path, perm); err != nil {
			return "", err
		}
	}
	return cs, nil
}

// newLogger returns the slog logger the agent and the forwarder write to w.
func newLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// plainHandler writes one readable line per record, "tether: MSG k=v...:
// ERR", for a forwarder run by hand in a terminal, where key=value lines
// with timestamps are noise. Its only state is the writer's lock.
type plainHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	level slog.Level
	attrs []slog.Attr
}

func newPlainLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(&plainHandler{mu: new(sync.Mutex), w: w, level: level})
}

func (h *plainHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *plainHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append(slices.Clip(h.attrs), as...)
	return &h2
}

// WithGroup is not needed by the forwarder: groups are flattened.
func (h *plainHandler) WithGroup(string) slog.Handler { return h }

func (h *plainHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("tether: ")
	b.WriteString(r.Message)
	var errText string
	add := func(a slog.Attr) bool {
		if a.Key == "err" {
			errText = a.Value.String()
			return true
		}
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value.Resolve())
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if errText != "" {
		b.WriteString(": ")
		b.WriteString(errText)
	}
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

// forwardLogger resolves the forwarder's --log-format and --log-level
// (flag, then environment, then plain and info); plain reports that format.
func forwardLogger(w io.Writer, format, level string, set map[string]bool, getenv func(string) string) (log *slog.Logger, plain bool, err error) {
	formatFrom, levelFrom := "--log-format", "--log-level"
	if v := getenv("TETHER_LOG_FORMAT"); !set["log-format"] && v != "" {
		format, formatFrom = v, "TETHER_LOG_FORMAT"
	}
	if v := getenv("TETHER_LOG_LEVEL"); !set["log-level"] && v != "" {
		level, levelFrom = v, "TETHER_LOG_LEVEL"
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, false, fmt.Errorf("%s %q: want debug, info, warn or error", levelFrom, level)
	}
	if format == "plain" {
		return newPlainLogger(w, l), true, nil
	}
	if format != "text" && format != "json" {
		return nil, false, fmt.Errorf("%s %q: want plain, text or json", formatFrom, format)
	}
	log, err = newLogger(w, format, l)
	return log, false, err
}

// fileHubs takes hubs as an array of "HOST:PORT" strings or as one
// comma-separated string, the flag's form; it holds the latter.
type fileHubs string

func (h *fileHubs) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*h = fileHubs(v)
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("hubs[%d]: want a \"HOST:PORT\" string", i)
			}
			parts[i] = s
		}
		*h = fileHubs(strings.Join(parts, ","))
	default:
		return errors.New(`hubs: want an array (["hub-1:443", "hub-2:443"]) or a string ("hub-1:443,hub-2:443")`)
	}
	return nil
}

// parseHubs splits a comma-separated list of HOST:PORT (the port may be
// left out: the transport's own).
func parseHubs(v string) ([]string, error) {
	var out []string
	for h := range strings.SplitSeq(v, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if strings.ContainsAny(h, "/ ") {
			return nil, fmt.Errorf("%q is not HOST:PORT", h)
		}
		out = append(out, h)
	}
	if len(out) == 0 {
		return nil, errors.New("no hub address")
	}
	return out, nil
}
