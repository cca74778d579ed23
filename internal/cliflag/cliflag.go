// Package cliflag adds to the standard flag package what Tether's two
// binaries need of their flags: defaults that an environment variable may
// override, with help that names the variable but never prints its value
// (TETHER_HUB holds the owner key, TETHER_NATS may hold a password), help
// sorted into groups, and a suggestion when a flag or a value looks like a
// typo.
//
// A flag keeps the default written in the code, so that help shows only
// what anyone can read in the source; the environment is applied over it
// before the command line is parsed, so that a flag given wins.
package cliflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// envValue is a flag's value that an environment variable may set.
type envValue struct {
	flag.Value
	env      string
	fromEnv  bool   // the variable set it
	fallback string // where the value comes from without flag or variable
}

// IsBoolFlag keeps "--tls" meaning "--tls=true" for a wrapped bool.
func (v *envValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Env marks the flag name of fs as one the environment variable env may
// set. Help then names env and says whether it is set, never what it holds.
// It panics if fs has no such flag: a wrong name is the program's mistake.
func Env(fs *flag.FlagSet, name, env string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("cliflag: no flag " + name)
	}
	if ev, ok := f.Value.(*envValue); ok {
		ev.env = env
		return
	}
	f.Value = &envValue{Value: f.Value, env: env}
}

// Fallback says in the help of the flag name of fs where its value comes
// from when neither the flag nor its variable gives it ("hub in
// ~/.config/tether/config.toml"): the program looks there itself, after
// parsing. It names the place, never what it holds; "" takes the note
// away. It panics if fs has no such flag.
func Fallback(fs *flag.FlagSet, name, where string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("cliflag: no flag " + name)
	}
	ev, ok := f.Value.(*envValue)
	if !ok {
		ev = &envValue{Value: f.Value}
		f.Value = ev
	}
	ev.fallback = where
}

// EnvAll marks every flag of fs with the variable prefix + its name in
// capitals, with _ for - (--mqtt-listen: TETHER_MQTT_LISTEN for the prefix
// TETHER_), so that a new flag has its variable without anyone thinking of
// it.
func EnvAll(fs *flag.FlagSet, prefix string) {
	fs.VisitAll(func(f *flag.Flag) {
		Env(fs, f.Name, EnvName(prefix, f.Name))
	})
}

// EnvName is the variable EnvAll gives the flag name.
func EnvName(prefix, name string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// EnvOf is the variable marked for the flag name of fs, or "".
func EnvOf(fs *flag.FlagSet, name string) string {
	if f := fs.Lookup(name); f != nil {
		if ev, ok := f.Value.(*envValue); ok {
			return ev.env
		}
	}
	return ""
}

// lookupEnv reads a variable; an empty one counts as unset, as it does for
// the CLI's TETHER_HUB, so that a blank line in an environment file does
// not replace a default with nothing.
func lookupEnv(name string) (string, bool) {
	v := os.Getenv(name)
	return v, v != ""
}

// ApplyEnv sets every marked flag of fs whose variable is set to that
// variable's value. Call it before fs.Parse, so that a flag given on the
// command line wins. A value that does not parse is an error naming the
// variable; only values of types that can fail to parse (numbers,
// durations, booleans) are quoted in it, never a string such as a key.
func ApplyEnv(fs *flag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		ev, ok := f.Value.(*envValue)
		if !ok {
			return
		}
		if ev.env == "" {
			return
		}
		v, set := lookupEnv(ev.env)
		if !set {
			return
		}
		if err := ev.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %s", ev.env, v, want(f, err)))
			return
		}
		ev.fromEnv = true
	})
	return errors.Join(errs...)
}

// want says what a flag's value should have been.
func want(f *flag.Flag, err error) string {
	switch kind(f) {
	case "int":
		return "want a whole number"
	case "float":
		return "want a number"
	case "duration":
		return "want a duration such as 30s or 5m"
	case "bool":
		return "want true or false"
	}
	return err.Error()
}

// kind is the type of a flag's value: bool, int, float, duration, string,
// or "" for a type of the program's own.
func kind(f *flag.Flag) string {
	g, ok := inner(f).(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case bool:
		return "bool"
	case int, int64, uint, uint64:
		return "int"
	case float64:
		return "float"
	case time.Duration:
		return "duration"
	case string:
		return "string"
	}
	return ""
}

// Kind is the type of the value of the flag name of fs: bool, int, float,
// duration, string, or "" for a type of the program's own.
func Kind(fs *flag.FlagSet, name string) string {
	if f := fs.Lookup(name); f != nil {
		return kind(f)
	}
	return ""
}

// Source names where the value of the flag name came from, for an error
// about it: "--name" when given on the command line or left at its
// default, else the variable that set it.
func Source(fs *flag.FlagSet, name string) string {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	if f := fs.Lookup(name); !given && f != nil {
		if ev, ok := f.Value.(*envValue); ok && ev.fromEnv {
			return ev.env
		}
	}
	return "--" + name
}

// inner is the flag's own value, under any envValue.
func inner(f *flag.Flag) flag.Value {
	if ev, ok := f.Value.(*envValue); ok {
		return ev.Value
	}
	return f.Value
}

// typeName is the word help shows after the flag: the `WORD` in its usage,
// else its type ("string", "duration", ...), "" for a bool.
func typeName(f *flag.Flag) string {
	g := *f
	g.Value = inner(f)
	name, _ := flag.UnquoteUsage(&g)
	return name
}

// ValueName is the word help shows for the value of the flag name of fs
// (FILE, ADDR, string, ...), "" for a bool.
func ValueName(fs *flag.FlagSet, name string) string {
	f := fs.Lookup(name)
	if f == nil {
		return ""
	}
	return typeName(f)
}

// Names lists the flags of fs, sorted.
func Names(fs *flag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

// helpWidth is where help lines wrap: a terminal's 80 columns.
const helpWidth = 80

// PrintFlags writes help for the named flags of fs, in that order (every
// flag, sorted, when names is nil): the flag, its value's word, its usage
// and where its default comes from. It shows a default written in the
// code and, for a flag an environment variable may set, the variable's
// name and whether it is set; never the variable's value.
func PrintFlags(w io.Writer, fs *flag.FlagSet, names []string) {
	if names == nil {
		names = Names(fs)
	}
	var b strings.Builder
	for _, name := range names {
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		_, usage := flag.UnquoteUsage(f)
		b.WriteString("  --" + f.Name)
		if t := typeName(f); t != "" {
			b.WriteString(" " + t)
		}
		b.WriteByte('\n')
		words := strings.Fields(usage)
		if note := defaultNote(f); note != "" {
			words = append(words, note) // kept on one line
		}
		wrap(&b, words, "        ")
	}
	io.WriteString(w, b.String())
}

// defaultNote says where a flag's value comes from when it is not given.
func defaultNote(f *flag.Flag) string {
	def := ""
	switch f.DefValue {
	case "", "false", "0", "0s", "[]":
	default:
		def = fmt.Sprintf("%q", shortDuration(f))
	}
	ev, ok := f.Value.(*envValue)
	if !ok {
		if def != "" {
			return "(default: " + def + ")"
		}
		return ""
	}
	var from []string
	if ev.env != "" {
		if _, set := lookupEnv(ev.env); set {
			return "(default: $" + ev.env + ", set)"
		}
		from = append(from, "$"+ev.env)
	}
	if ev.fallback != "" {
		from = append(from, ev.fallback)
	}
	if def != "" {
		from = append(from, def)
	}
	if len(from) == 0 {
		return ""
	}
	return "(default: " + strings.Join(from, ", else ") + ")"
}

// shortDuration is a flag's default, a duration without its zero minutes
// and seconds: 168h rather than 168h0m0s.
func shortDuration(f *flag.Flag) string {
	v := f.DefValue
	if kind(f) != "duration" {
		return v
	}
	if strings.HasSuffix(v, "m0s") {
		v = strings.TrimSuffix(v, "0s")
	}
	if strings.HasSuffix(v, "h0m") {
		v = strings.TrimSuffix(v, "0m")
	}
	return v
}

// wrap writes words in lines of at most helpWidth columns, each after
// indent; a word longer than a line stands alone.
func wrap(b *strings.Builder, words []string, indent string) {
	line := indent
	for _, word := range words {
		if line != indent && utf8.RuneCountInString(line)+1+utf8.RuneCountInString(word) > helpWidth {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
}

// Group is a titled list of flags, for help that sorts many flags by what
// they are about.
type Group struct {
	Title string
	Names []string
}

// PrintGroups writes help for fs's flags under the groups' titles, in
// their order; flags in no group follow under "Other flags".
func PrintGroups(w io.Writer, fs *flag.FlagSet, groups []Group) {
	for i, g := range groups {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, g.Title+":")
		PrintFlags(w, fs, g.Names)
	}
	if rest := Ungrouped(fs, groups); len(rest) > 0 {
		fmt.Fprintln(w, "\nOther flags:")
		PrintFlags(w, fs, rest)
	}
}

// Ungrouped lists the flags of fs that are in none of groups.
func Ungrouped(fs *flag.FlagSet, groups []Group) []string {
	var rest []string
	for _, name := range Names(fs) {
		if !slices.ContainsFunc(groups, func(g Group) bool { return slices.Contains(g.Names, name) }) {
			rest = append(rest, name)
		}
	}
	return rest
}

// Explain turns an error of fs.Parse into a line a user can act on: flags
// written with two dashes, as Tether's help writes them, and for a flag
// that does not exist the one that was probably meant.
func Explain(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		name = strings.TrimLeft(name, "-")
		if m := Closest(name, Names(fs)); m != "" {
			return fmt.Errorf("unknown flag --%s (did you mean --%s?)", name, m)
		}
		return fmt.Errorf("unknown flag --%s", name)
	}
	// "flag needs an argument: -listen", "invalid value ... for flag -x".
	for _, p := range []string{": -", "flag -", "for -"} {
		msg = strings.ReplaceAll(msg, p, p[:len(p)-1]+"--")
	}
	return errors.New(msg)
}

// Closest is the one of choices that s probably meant to be: equal but for
// letter case, or one or two typing mistakes away (one for a short word).
// It is "" when none is that close, or when two are equally close.
func Closest(s string, choices []string) string {
	best, bestD, tie := "", 0, false
	limit := 2
	if utf8.RuneCountInString(s) <= 4 {
		limit = 1
	}
	for _, c := range choices {
		d := distance(strings.ToLower(s), strings.ToLower(c))
		if d > limit {
			continue
		}
		switch {
		case best == "" || d < bestD:
			best, bestD, tie = c, d, false
		case d == bestD:
			tie = true
		}
	}
	if tie {
		return ""
	}
	return best
}

// distance is the Levenshtein distance of a and b, with a transposition of
// two neighbouring letters counted as one mistake.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
