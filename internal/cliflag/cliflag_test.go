package cliflag

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func testFlags() (*flag.FlagSet, *string, *int, *bool, *time.Duration) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := fs.String("listen", ":8443", "`ADDR` to listen on")
	n := fs.Int("max-streams", 10, "streams at once")
	b := fs.Bool("tls", true, "serve TLS")
	d := fs.Duration("retention", 168*time.Hour, "how long records are kept")
	fs.String("key", "", "a key")
	EnvAll(fs, "T_")
	return fs, s, n, b, d
}

// TestEnvThenFlags: a variable overrides the default, a flag overrides
// the variable, an empty variable counts as unset, and Source says which
// one a value came from.
func TestEnvThenFlags(t *testing.T) {
	t.Setenv("T_LISTEN", ":9000")
	t.Setenv("T_MAX_STREAMS", "5")
	t.Setenv("T_TLS", "false")
	t.Setenv("T_RETENTION", "")
	fs, s, n, b, d := testFlags()
	if err := ApplyEnv(fs); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--max-streams", "7"}); err != nil {
		t.Fatal(err)
	}
	if *s != ":9000" || *n != 7 || *b || *d != 168*time.Hour {
		t.Errorf("listen %q, max-streams %d, tls %v, retention %v", *s, *n, *b, *d)
	}
	for name, want := range map[string]string{"listen": "T_LISTEN", "max-streams": "--max-streams", "retention": "--retention", "tls": "T_TLS"} {
		if got := Source(fs, name); got != want {
			t.Errorf("Source(%s) = %q, want %q", name, got, want)
		}
	}
	// "--tls" alone still means true with the variable's wrapper around it.
	if err := fs.Parse([]string{"--tls"}); err != nil || !*b {
		t.Errorf("--tls: %v, tls %v", err, *b)
	}
}

// TestApplyEnvErrors names the variable and what was wanted, and never
// quotes a string value.
func TestApplyEnvErrors(t *testing.T) {
	t.Setenv("T_MAX_STREAMS", "lots")
	t.Setenv("T_TLS", "flase")
	t.Setenv("T_RETENTION", "7")
	fs, _, _, _, _ := testFlags()
	err := ApplyEnv(fs)
	for _, want := range []string{`T_MAX_STREAMS "lots": want a whole number`, `T_TLS "flase": want true or false`, `T_RETENTION "7": want a duration`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to say %q", err, want)
		}
	}
}

// TestPrintFlags: help shows the code's defaults and the variables' names,
// whether they are set, and never their values.
func TestPrintFlags(t *testing.T) {
	t.Setenv("T_KEY", "s3cret-key")
	t.Setenv("T_LISTEN", "10.9.8.7:1")
	fs, _, _, _, _ := testFlags()
	if err := ApplyEnv(fs); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	PrintFlags(&b, fs, nil)
	help := b.String()
	for _, leak := range []string{"s3cret-key", "10.9.8.7"} {
		if strings.Contains(help, leak) {
			t.Errorf("help shows %q:\n%s", leak, help)
		}
	}
	for _, want := range []string{
		"  --key string\n        a key (default: $T_KEY, set)\n",
		"  --listen ADDR\n        ADDR to listen on (default: $T_LISTEN, set)\n",
		`(default: $T_MAX_STREAMS, else "10")`,
		`(default: $T_RETENTION, else "168h")`,
		"  --tls\n",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	for line := range strings.SplitSeq(help, "\n") {
		if len(line) > helpWidth {
			t.Errorf("line of %d columns: %q", len(line), line)
		}
	}
}

func TestGroups(t *testing.T) {
	fs, _, _, _, _ := testFlags()
	groups := []Group{{"Listeners", []string{"listen", "tls"}}, {"Limits", []string{"max-streams"}}}
	if got := Ungrouped(fs, groups); strings.Join(got, ",") != "key,retention" {
		t.Errorf("Ungrouped = %q", got)
	}
	var b strings.Builder
	PrintGroups(&b, fs, groups)
	help := b.String()
	if !strings.HasPrefix(help, "Listeners:\n  --listen ADDR\n") || !strings.Contains(help, "\n\nLimits:\n  --max-streams int\n") || !strings.Contains(help, "\nOther flags:\n  --key string\n") {
		t.Errorf("groups:\n%s", help)
	}
}

func TestClosest(t *testing.T) {
	choices := []string{"listen", "log-level", "log-format", "off", "on", "json"}
	for s, want := range map[string]string{
		"lisen":     "listen",
		"lsiten":    "listen",
		"log-levle": "log-level",
		"OFF":       "off",
		"jsno":      "json",
		"of":        "", // off and on are both one letter away
		"xyz":       "",
		"log-form":  "log-format",
	} {
		if got := Closest(s, choices); got != want {
			t.Errorf("Closest(%q) = %q, want %q", s, got, want)
		}
	}
	if got := Closest("of", []string{"off"}); got != "off" {
		t.Errorf(`Closest("of", off) = %q`, got)
	}
}

func TestExplain(t *testing.T) {
	fs, _, _, _, _ := testFlags()
	for args, want := range map[string]string{
		"--lisen":         "unknown flag --lisen (did you mean --listen?)",
		"-bogus":          "unknown flag --bogus",
		"--listen":        "flag needs an argument: --listen",
		"--max-streams=x": `invalid value "x" for flag --max-streams`,
	} {
		err := fs.Parse(strings.Fields(args))
		if err == nil {
			t.Fatalf("%s parsed", args)
		}
		if got := Explain(fs, err).Error(); !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want it to begin %q", args, got, want)
		}
	}
	if err := fs.Parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

// TestFallback: help names the place a value comes from after the flag
// and its variable, only while the variable is unset, and never what
// that place holds; a flag with no variable gets the note too.
func TestFallback(t *testing.T) {
	fs, _, _, _, _ := testFlags()
	fs.String("ca", "", "a CA `FILE`")
	Fallback(fs, "key", "key in ~/.t.toml")
	Fallback(fs, "ca", "ca in ~/.t.toml")
	Fallback(fs, "max-streams", "max in ~/.t.toml")
	var b strings.Builder
	PrintFlags(&b, fs, []string{"key", "ca", "max-streams"})
	for _, want := range []string{
		"a key (default: $T_KEY, else key in ~/.t.toml)\n",
		"a CA FILE (default: ca in ~/.t.toml)\n",
		`(default: $T_MAX_STREAMS, else max in ~/.t.toml, else "10")`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, b.String())
		}
	}

	t.Setenv("T_KEY", "s3cret-key")
	if err := ApplyEnv(fs); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	PrintFlags(&b, fs, []string{"key"})
	if want := "a key (default: $T_KEY, set)\n"; !strings.HasSuffix(b.String(), want) {
		t.Errorf("with $T_KEY set, help is %q, want it to end %q", b.String(), want)
	}
	Fallback(fs, "ca", "")
	b.Reset()
	PrintFlags(&b, fs, []string{"ca"})
	if strings.Contains(b.String(), "default") {
		t.Errorf("the note taken away, help still has one: %q", b.String())
	}
}
