package tomlconf

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

// tree parses doc into plain values, for comparison.
func tree(t *testing.T, doc string) map[string]any {
	t.Helper()
	d, err := parse([]byte(doc))
	if err != nil {
		t.Fatalf("parsing %q: %v", doc, err)
	}
	return plain(d.root).(map[string]any)
}

func TestParseValues(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want map[string]any
	}{
		{"", map[string]any{}},
		{"# only a comment\n\n  \t\n", map[string]any{}},
		{`a = "x"`, map[string]any{"a": "x"}},
		{"a = \"x\" # comment\r\nb = 'y'\n", map[string]any{"a": "x", "b": "y"}},
		{`a = "tab\there \"q\" \\ \u00e9 \U0001F600 \b\f\n\r \e\x41"`, map[string]any{"a": "tab\there \"q\" \\ é 😀 \b\f\n\r \x1bA"}},
		{"\ufeffa = 'after a byte order mark'", map[string]any{"a": "after a byte order mark"}},
		{"a = '''x\r\ny'''", map[string]any{"a": "x\r\ny"}},
		{`a = 'C:\path\no\escapes'`, map[string]any{"a": `C:\path\no\escapes`}},
		{"a = \"\"\"\nline one\nline two\"\"\"", map[string]any{"a": "line one\nline two"}},
		{"a = \"\"\"one \\\n    two\"\"\"", map[string]any{"a": "one two"}},
		{"a = \"\"\"quote\"\"\"\"\"", map[string]any{"a": "quote\"\""}},
		{"a = '''\nraw \\n 'single' ''''", map[string]any{"a": "raw \\n 'single' '"}},
		{`a = ""`, map[string]any{"a": ""}},
		{`"quoted key" = "v"`, map[string]any{"quoted key": "v"}},
		{`'lit.key' = "v"`, map[string]any{"lit.key": "v"}},
		{`"" = "empty key"`, map[string]any{"": "empty key"}},
		{"a.b . c = 'v'\na.d = 'w'", map[string]any{"a": map[string]any{"b": map[string]any{"c": "v"}, "d": "w"}}},
		{"n = 42\nm = -17\nz = +0\nh = 0xdead_BEEF\no = 0o755\nb = 0b101\nu = 1_000", map[string]any{
			"n": int64(42), "m": int64(-17), "z": int64(0), "h": int64(0xdeadbeef), "o": int64(0o755), "b": int64(5), "u": int64(1000)}},
		{"f = 3.14\ng = -0.5e-3\nh = 6E2\ni = 1_0.2_5\nj = -inf", map[string]any{"f": 3.14, "g": -0.0005, "h": 600.0, "i": 10.25, "j": math.Inf(-1)}},
		{"t = true\nf = false", map[string]any{"t": true, "f": false}},
		{"d = 1979-05-27T07:32:00Z\ne = 1979-05-27 07:32:00.999-07:00\nf = 1979-05-27\ng = 07:32:00\nh = 1979-05-27T07:32:00\ni = 07:32",
			map[string]any{"d": Datetime("1979-05-27T07:32:00Z"), "e": Datetime("1979-05-27 07:32:00.999-07:00"),
				"f": Datetime("1979-05-27"), "g": Datetime("07:32:00"), "h": Datetime("1979-05-27T07:32:00"), "i": Datetime("07:32")}},
		{"a = []\nb = [ 'x', \"y\", ]\nc = [\n  'x', # comment\n\n  [1, 2],\n]", map[string]any{
			"a": []any{}, "b": []any{"x", "y"}, "c": []any{"x", []any{int64(1), int64(2)}}}},
		{"t = {}\nu = { a = 'x', b.c = 1 }", map[string]any{"t": map[string]any{}, "u": map[string]any{"a": "x", "b": map[string]any{"c": int64(1)}}}},
		{"a = 1\n[allow]\nssh = \"127.0.0.1:22\"\n[ x . y ]\nz = 2\n[x]\nw = 3", map[string]any{
			"a": int64(1), "allow": map[string]any{"ssh": "127.0.0.1:22"},
			"x": map[string]any{"y": map[string]any{"z": int64(2)}, "w": int64(3)}}},
		{"[fruit]\napple.color = 'red'\n[fruit.apple.texture]\nsmooth = true", map[string]any{
			"fruit": map[string]any{"apple": map[string]any{"color": "red", "texture": map[string]any{"smooth": true}}}}},
		{"[[p]]\nn = 1\n[[p]]\nn = 2\n[p.sub]\nk = 'v'", map[string]any{
			"p": []any{map[string]any{"n": int64(1)}, map[string]any{"n": int64(2), "sub": map[string]any{"k": "v"}}}}},
	} {
		if got := tree(t, tc.doc); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q:\n got %#v\nwant %#v", tc.doc, got, tc.want)
		}
	}
}

// Invalid documents fail with the line of the error and the key being
// read, and never quote the document.
func TestParseErrors(t *testing.T) {
	const secret = "c2VjcmV0"
	for _, tc := range []struct {
		doc     string
		line    int
		lastKey string
	}{
		{"a = " + secret, 1, "a"},
		{"a = 'x'\nb = HostName=h;SharedAccessKey=" + secret, 2, "b"},
		{`a = "` + secret, 1, "a"},
		{"a = \"" + secret + "\nb = 'x'", 1, "a"},
		{"a = '" + secret, 1, "a"},
		{"a = \"\"\"" + secret + "\n\n", 3, "a"},
		{"a = '''" + secret, 1, "a"},
		{`a = "\q` + secret + `"`, 1, "a"},
		{`a = "\u12` + `"`, 1, "a"},
		{`a = "\uD800"`, 1, "a"},
		{"a = \"\"\"x\"\"\"\"\"\"", 1, "a"},
		{"a = 'x' b = 'y'", 1, "a"},
		{"a 'x'", 1, "a"},
		{"= 'x'", 1, ""},
		{"a. = 'x'", 1, ""},
		{"a = 'x'\na = 'y'", 2, "a"},
		{"a = 'x'\na.b = 'y'", 2, "a.b"},
		{"a = {b = 1}\na.c = 2", 2, "a.c"},
		{"a = {b = 1,}", 1, "a"},
		{"a = {b = 1\n}", 1, "a"},
		{"a = [1 2]", 1, "a"},
		{"a = [1,", 1, "a"},
		{"[t]\n[t]", 2, "t"},
		{"[t]\nx = 1\n[t.x]", 3, "t.x"},
		{"a = 1\n[a]", 2, "a"},
		{"a = {}\n[a.b]", 2, "a.b"},
		{"[[p]]\n[p]", 2, "p"},
		{"[t", 1, "t"},
		{"[[t]", 1, "t"},
		{"n = 012", 1, "n"},
		{"n = 1__0", 1, "n"},
		{"n = _1", 1, "n"},
		{"n = 0x", 1, "n"},
		{"n = -0x1", 1, "n"},
		{"n = 99999999999999999999", 1, "n"},
		{"f = 1.", 1, "f"},
		{"f = .5", 1, "f"},
		{"f = 1e", 1, "f"},
		{"d = 1979-13-27", 1, "d"},
		{"d = 07:3", 1, "d"},
		{"b = True", 1, "b"},
		{"a = 'x' # \x01", 1, "a"},
		{"a = 'x\x01'", 1, "a"},
		{"a = 'x'\r", 1, "a"},
		{"a = '\xff'", 1, ""},
		{"a = " + strings.Repeat("[", 101) + strings.Repeat("]", 101), 1, "a"},
	} {
		_, err := parse([]byte(tc.doc))
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%q: error %v, want a ParseError", tc.doc, err)
			continue
		}
		if pe.Line != tc.line || pe.LastKey != tc.lastKey {
			t.Errorf("%q: line %d, key %q (%v); want line %d, key %q", tc.doc, pe.Line, pe.LastKey, pe, tc.line, tc.lastKey)
		}
		if strings.Contains(pe.Error(), secret) {
			t.Errorf("%q: the error quotes the document: %v", tc.doc, pe)
		}
	}
}

// hubList reads an array of strings or one string, as the agent's hubs.
type hubList []string

func (h *hubList) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*h = strings.Split(v, ",")
	case []any:
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("hubs: want strings, not %s", typeName(e))
			}
			*h = append(*h, s)
		}
	default:
		return fmt.Errorf("hubs: want an array or a string, not %s", typeName(v))
	}
	return nil
}

type conf struct {
	Name  string  `toml:"name"`
	CA    string  `toml:"ca,omitempty"`
	Hubs  hubList `toml:"hubs"`
	Other string
}

func TestDecode(t *testing.T) {
	var c conf
	un, err := Decode([]byte("name = 'n'\nhubs = ['a:1', 'b:2']\nextra = 1\n[log]\nlevel = 'debug'\n[log.file]\npath = 'x'\n"), &c)
	if err != nil {
		t.Fatal(err)
	}
	if want := (conf{Name: "n", Hubs: hubList{"a:1", "b:2"}}); !reflect.DeepEqual(c, want) {
		t.Errorf("decoded %+v, want %+v", c, want)
	}
	if want := []string{"extra", "log", "log.level", "log.file", "log.file.path"}; !reflect.DeepEqual(un, want) {
		t.Errorf("unknown %q, want %q", un, want)
	}

	un, err = Decode([]byte("other = 'x'\nOther = 'y'\n\"name.x\" = 1\nlog.level = 2\n"), &c)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"other", "Other", `"name.x"`, "log", "log.level"}; !reflect.DeepEqual(un, want) {
		t.Errorf("unknown %q, want %q", un, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	const secret = "c2VjcmV0"
	for _, tc := range []struct {
		doc  string
		want []string
	}{
		{"name = 'n'\nca = 3\n", []string{"line 2", "ca: want a string, not an integer"}},
		{"name = ['" + secret + "']\n", []string{"line 1", "name: want a string, not an array"}},
		{"\n\nhubs = 3\n", []string{"line 3", "hubs: want an array or a string, not an integer"}},
		{"hubs = ['a', {x = '" + secret + "'}]\n", []string{"line 1", "hubs: want strings, not a table"}},
		{"[name]\nx = 'y'\n", []string{"line 1", "name: want a string, not a table"}},
	} {
		var c conf
		_, err := Decode([]byte(tc.doc), &c)
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%q: error %v, want a FieldError", tc.doc, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not say %q", tc.doc, err, w)
			}
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%q: the error quotes the document: %v", tc.doc, err)
		}
	}
	var c conf
	if _, err := Decode([]byte("name = "), &c); err == nil {
		t.Error("a syntax error decoded")
	}
	if _, err := Decode([]byte("name = 'x'"), c); err == nil {
		t.Error("a struct, not a pointer, decoded")
	}
}

// Quote's output parses back to the string it was given.
func TestQuote(t *testing.T) {
	for _, s := range []string{"", "plain", `HostName=h;SharedAccessKey=a+b/c==`, `C:\dir\ca.pem`, "q\"uote", "ctl\x00\x01\x1f\x7f\b\t\n\f\r", "é 😀"} {
		got := tree(t, "k = "+Quote(s))["k"]
		if got != s {
			t.Errorf("Quote(%q) = %s parses to %q", s, Quote(s), got)
		}
	}
}

// FuzzParse checks that no input panics and that what Quote writes always
// parses back.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"a = 'x'", "[t]\nk = [1, 'x', {a = 1}]", "a = \"\"\"\nx\\\n y\"\"\"", "d = 1979-05-27 07:32:00Z", "[[p]]\n[p.q]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		parse([]byte(s))
		if !strings.ContainsRune(s, 0xfffd) && isValidUTF8(s) {
			d, err := parse([]byte("k = " + Quote(s)))
			if err != nil {
				t.Fatalf("Quote(%q) = %s does not parse: %v", s, Quote(s), err)
			}
			if got := d.root.vals["k"]; got != s {
				t.Fatalf("Quote(%q) parses to %q", s, got)
			}
		}
	})
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "") == s }

// Arrays nested as deep as maxDepth parse; one more is an error (above).
func TestParseDepth(t *testing.T) {
	v := tree(t, "a = "+strings.Repeat("[", maxDepth)+strings.Repeat("]", maxDepth))["a"]
	for n := 1; n < maxDepth; n++ {
		a, ok := v.([]any)
		if !ok || len(a) != 1 {
			t.Fatalf("level %d: %#v", n, v)
		}
		v = a[0]
	}
	if a, ok := v.([]any); !ok || len(a) != 0 {
		t.Fatalf("innermost: %#v", v)
	}
}
