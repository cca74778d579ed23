// Package tomlconf reads and writes Tether's config files: TOML documents
// whose settings are strings, arrays of strings and tables of strings. It
// parses the whole of TOML 1.0's syntax, so that any valid file parses and
// an invalid one fails with its line, and decodes into a struct by its
// fields' `toml` tags, reporting the keys the struct has no field for.
//
// It is Tether's own rather than a general TOML library because the agent
// links it: a general library's code (about 230 KB of the binary) and its
// eager initialisation (it loads the local time zone) cost the idle agent
// about 0.3 MiB of resident memory, for a file of a dozen keys.
//
// Errors never quote the document: a config file may hold a device key.
package tomlconf

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ParseError is a document that is not valid TOML.
type ParseError struct {
	Line int // 1-based
	// LastKey is the key whose value was being read when the error was
	// found, or the last one read before it; "" if none was.
	LastKey string
	Msg     string // what was wrong, without quoting the document
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// Datetime is a TOML date, time or date-time value, as written.
type Datetime string

// table is a TOML table while the document is read.
type table struct {
	vals map[string]any // string, int64, float64, bool, Datetime, []any, *table, *tableArray
	keys []string       // in the document's order
	path []string       // from the root; nil for a table inside an array value
	// explicit: defined by a [header]; sealed: an inline table, complete
	// once read. Like the library the agent used before, a table made by
	// dotted keys may be named by a header later and the other way round;
	// an inline table may not be added to.
	explicit, sealed bool
}

// tableArray is an array of tables ([[header]]).
type tableArray struct{ tables []*table }

func newTable(path []string) *table { return &table{vals: map[string]any{}, path: path} }

func (t *table) set(k string, v any) {
	t.vals[k] = v
	t.keys = append(t.keys, k)
}

// doc is a parsed document.
type doc struct {
	root  *table
	lines map[string]int // dotted key → the line that defined it
	order []string       // dotted keys in the document's order
}

type parser struct {
	s       string
	i       int
	line    int
	lastKey string
	doc     *doc
	cur     *table
	depth   int // arrays and inline tables open
}

// maxDepth bounds the nesting of arrays and inline tables, so that a
// document of brackets is an error rather than a deep recursion.
const maxDepth = 100

// parse reads a whole document.
func parse(data []byte) (*doc, error) {
	d := &doc{root: newTable([]string{}), lines: map[string]int{}}
	p := &parser{s: strings.TrimPrefix(string(data), "\ufeff"), line: 1, doc: d, cur: d.root}
	if !utf8.ValidString(p.s) {
		bad := 0
		for bad < len(p.s) {
			r, n := utf8.DecodeRuneInString(p.s[bad:])
			if r == utf8.RuneError && n == 1 {
				break
			}
			bad += n
		}
		return nil, &ParseError{Line: 1 + strings.Count(p.s[:bad], "\n"), Msg: "not UTF-8"}
	}
	if err := p.document(); err != nil {
		return nil, err
	}
	return d, nil
}

func (p *parser) errf(format string, args ...any) error {
	return &ParseError{Line: p.line, LastKey: p.lastKey, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) eof() bool { return p.i >= len(p.s) }

func (p *parser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.i]
}

func (p *parser) hasPrefix(s string) bool { return strings.HasPrefix(p.s[p.i:], s) }

func (p *parser) skipWS() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// newline consumes LF or CRLF.
func (p *parser) newline() bool {
	switch {
	case p.hasPrefix("\n"):
		p.i++
	case p.hasPrefix("\r\n"):
		p.i += 2
	default:
		return false
	}
	p.line++
	return true
}

// comment consumes a comment up to its line's end, if one starts here.
func (p *parser) comment() error {
	if p.peek() != '#' {
		return nil
	}
	for p.i++; !p.eof() && p.s[p.i] != '\n'; p.i++ {
		if c := p.s[p.i]; isControl(c) && c != '\t' && !p.hasPrefix("\r\n") {
			return p.errf("control character in a comment")
		}
	}
	return nil
}

// blank skips whitespace, comments and newlines.
func (p *parser) blank() error {
	for {
		p.skipWS()
		if err := p.comment(); err != nil {
			return err
		}
		if !p.newline() {
			return nil
		}
	}
}

func isControl(c byte) bool { return c < 0x20 || c == 0x7f }

func (p *parser) document() error {
	for {
		if err := p.blank(); err != nil {
			return err
		}
		if p.eof() {
			return nil
		}
		var err error
		if p.peek() == '[' {
			err = p.header()
		} else {
			err = p.keyval(p.cur)
		}
		if err != nil {
			return err
		}
		p.skipWS()
		if err := p.comment(); err != nil {
			return err
		}
		if !p.eof() && !p.newline() {
			return p.errf("expected the end of the line")
		}
	}
}

// key reads a possibly dotted key.
func (p *parser) key() ([]string, error) {
	var parts []string
	for {
		p.skipWS()
		k, err := p.simpleKey()
		if err != nil {
			return nil, err
		}
		parts = append(parts, k)
		p.skipWS()
		if p.peek() != '.' {
			return parts, nil
		}
		p.i++
	}
}

func (p *parser) simpleKey() (string, error) {
	switch p.peek() {
	case '"':
		return p.basicString()
	case '\'':
		return p.literalString()
	}
	start := p.i
	for !p.eof() && isBare(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return "", p.errf("expected a key")
	}
	return p.s[start:p.i], nil
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// keyval reads KEY = VALUE into t.
func (p *parser) keyval(t *table) error {
	parts, err := p.key()
	if err != nil {
		return err
	}
	full := append(append([]string{}, t.path...), parts...)
	p.lastKey = keyString(full)
	p.skipWS()
	if p.peek() != '=' {
		return p.errf("expected = after a key")
	}
	p.i++
	p.skipWS()
	line := p.line
	v, err := p.value()
	if err != nil {
		return err
	}
	for n, k := range parts[:len(parts)-1] {
		switch sub := t.vals[k].(type) {
		case nil:
			var path []string
			if t.path != nil {
				path = append(append([]string{}, t.path...), parts[:n+1]...)
			}
			nt := newTable(path)
			t.set(k, nt)
			p.record(nt.path, line)
			t = nt
		case *table:
			if sub.sealed {
				return p.errf("key extends an inline table")
			}
			t = sub
		default:
			return p.errf("key extends a value that is not a table")
		}
	}
	last := parts[len(parts)-1]
	if _, dup := t.vals[last]; dup {
		return p.errf("key defined twice")
	}
	t.set(last, v)
	if t.path != nil {
		p.record(append(append([]string{}, t.path...), last), line)
	}
	return nil
}

// record notes where a key of the document is defined.
func (p *parser) record(path []string, line int) {
	if path == nil {
		return
	}
	k := keyString(path)
	p.doc.lines[k] = line
	p.doc.order = append(p.doc.order, k)
}

// header reads [TABLE] or [[TABLE]] and makes that table the current one.
func (p *parser) header() error {
	array := p.hasPrefix("[[")
	p.i++
	if array {
		p.i++
	}
	parts, err := p.key()
	if err != nil {
		return err
	}
	p.lastKey = keyString(parts)
	closing := "]"
	if array {
		closing = "]]"
	}
	if !p.hasPrefix(closing) {
		return p.errf("expected %s after a table's name", closing)
	}
	p.i += len(closing)
	t := p.doc.root
	for n, k := range parts[:len(parts)-1] {
		switch sub := t.vals[k].(type) {
		case nil:
			nt := newTable(parts[:n+1])
			t.set(k, nt)
			p.record(nt.path, p.line)
			t = nt
		case *table:
			if sub.sealed {
				return p.errf("table extends an inline table")
			}
			t = sub
		case *tableArray:
			t = sub.tables[len(sub.tables)-1]
		default:
			return p.errf("table extends a value that is not a table")
		}
	}
	last := parts[len(parts)-1]
	switch sub := t.vals[last].(type) {
	case nil:
		nt := newTable(parts)
		nt.explicit = true
		if array {
			t.set(last, &tableArray{tables: []*table{nt}})
		} else {
			t.set(last, nt)
		}
		p.record(parts, p.line)
		p.cur = nt
	case *table:
		if array || sub.explicit || sub.sealed {
			return p.errf("table defined twice")
		}
		sub.explicit = true
		p.cur = sub
	case *tableArray:
		if !array {
			return p.errf("table defined twice")
		}
		nt := newTable(parts)
		nt.explicit = true
		sub.tables = append(sub.tables, nt)
		p.cur = nt
	default:
		return p.errf("table defined twice")
	}
	return nil
}

func (p *parser) value() (any, error) {
	switch {
	case p.hasPrefix(`"""`):
		return p.multiString('"')
	case p.hasPrefix(`'''`):
		return p.multiString('\'')
	case p.peek() == '"':
		return p.basicString()
	case p.peek() == '\'':
		return p.literalString()
	case p.peek() == '[' || p.peek() == '{':
		if p.depth >= maxDepth {
			return nil, p.errf("arrays and tables nested too deep")
		}
		p.depth++
		defer func() { p.depth-- }()
		if p.peek() == '[' {
			return p.array()
		}
		return p.inlineTable()
	}
	return p.scalar()
}

// basicString reads a one-line "string" with escapes.
func (p *parser) basicString() (string, error) {
	var b strings.Builder
	for p.i++; ; {
		if p.eof() {
			return "", p.errf("unterminated string")
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c == '\\':
			if err := p.escape(&b); err != nil {
				return "", err
			}
		case c == '\n' || c == '\r':
			return "", p.errf("unterminated string")
		case isControl(c) && c != '\t':
			return "", p.errf("control character in a string")
		default:
			b.WriteByte(c)
			p.i++
		}
	}
}

// escape reads the escape sequence at p.i into b.
func (p *parser) escape(b *strings.Builder) error {
	if p.i+1 >= len(p.s) {
		return p.errf("unterminated string")
	}
	c := p.s[p.i+1]
	p.i += 2
	switch c {
	case 'b':
		b.WriteByte('\b')
	case 't':
		b.WriteByte('\t')
	case 'n':
		b.WriteByte('\n')
	case 'f':
		b.WriteByte('\f')
	case 'r':
		b.WriteByte('\r')
	case '"':
		b.WriteByte('"')
	case '\\':
		b.WriteByte('\\')
	case 'e': // TOML 1.1, as most parsers take it
		b.WriteByte(0x1b)
	case 'x', 'u', 'U':
		n := 2 // \xHH: TOML 1.1
		switch c {
		case 'u':
			n = 4
		case 'U':
			n = 8
		}
		if p.i+n > len(p.s) {
			return p.errf("short unicode escape")
		}
		v, err := strconv.ParseUint(p.s[p.i:p.i+n], 16, 32)
		if err != nil || !utf8.ValidRune(rune(v)) {
			return p.errf("invalid unicode escape")
		}
		p.i += n
		b.WriteRune(rune(v))
	default:
		return p.errf("invalid escape in a string")
	}
	return nil
}

// literalString reads a one-line 'string', taken as written.
func (p *parser) literalString() (string, error) {
	start := p.i + 1
	for p.i = start; ; p.i++ {
		if p.eof() || p.s[p.i] == '\n' || p.s[p.i] == '\r' {
			return "", p.errf("unterminated string")
		}
		c := p.s[p.i]
		if c == '\'' {
			p.i++
			return p.s[start : p.i-1], nil
		}
		if isControl(c) && c != '\t' {
			return "", p.errf("control character in a string")
		}
	}
}

// multiString reads a multi-line string: basic (three double quotes
// around it, q '"') or literal (three single quotes). Its first newline is
// dropped; up to two quotes may stand before the closing three.
func (p *parser) multiString(q byte) (string, error) {
	p.i += 3
	p.newline()
	var b strings.Builder
	for {
		if p.eof() {
			return "", p.errf("unterminated string")
		}
		c := p.s[p.i]
		switch {
		case c == q && p.hasPrefix(strings.Repeat(string(q), 3)):
			n := 3
			for n < len(p.s)-p.i && p.s[p.i+n] == q {
				n++
			}
			if n > 5 {
				return "", p.errf("too many quotes closing a string")
			}
			b.WriteString(strings.Repeat(string(q), n-3))
			p.i += n
			return b.String(), nil
		case c == '\\' && q == '"':
			if err := p.lineEndOrEscape(&b); err != nil {
				return "", err
			}
		case c == '\n' || p.hasPrefix("\r\n"):
			start := p.i
			p.newline()
			b.WriteString(p.s[start:p.i])
		case isControl(c) && c != '\t':
			return "", p.errf("control character in a string")
		default:
			b.WriteByte(c)
			p.i++
		}
	}
}

// lineEndOrEscape reads, in a multi-line basic string, a backslash ending
// its line (which drops the whitespace and newlines after it) or an
// escape.
func (p *parser) lineEndOrEscape(b *strings.Builder) error {
	j := p.i + 1
	for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t') {
		j++
	}
	if j < len(p.s) && (p.s[j] == '\n' || strings.HasPrefix(p.s[j:], "\r\n")) {
		p.i = j
		for {
			p.skipWS()
			if !p.newline() {
				return nil
			}
		}
	}
	return p.escape(b)
}

func (p *parser) array() ([]any, error) {
	p.i++
	out := []any{}
	for {
		if err := p.blank(); err != nil {
			return nil, err
		}
		if p.peek() == ']' {
			p.i++
			return out, nil
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		if err := p.blank(); err != nil {
			return nil, err
		}
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			return out, nil
		default:
			return nil, p.errf("expected , or ] in an array")
		}
	}
}

func (p *parser) inlineTable() (*table, error) {
	p.i++
	// An inline table is decoded as one value: its keys are not listed.
	t := newTable(nil)
	p.skipWS()
	if p.peek() == '}' {
		p.i++
		t.sealed = true
		return t, nil
	}
	lastKey := p.lastKey
	for {
		if err := p.keyval(t); err != nil {
			return nil, err
		}
		p.lastKey = lastKey
		p.skipWS()
		switch p.peek() {
		case ',':
			p.i++
			p.skipWS()
			if p.peek() == '}' {
				return nil, p.errf("trailing comma in an inline table")
			}
		case '}':
			p.i++
			seal(t)
			return t, nil
		default:
			return nil, p.errf("expected , or } in an inline table")
		}
	}
}

// seal closes an inline table and the tables its dotted keys made.
func seal(t *table) {
	t.sealed = true
	for _, v := range t.vals {
		if sub, ok := v.(*table); ok {
			seal(sub)
		}
	}
}

// scalar reads a boolean, number or date-time.
func (p *parser) scalar() (any, error) {
	start := p.i
	for !p.eof() && isScalarByte(p.s[p.i]) {
		p.i++
	}
	tok := p.s[start:p.i]
	// A date and a time may be separated by a space.
	if isDate(tok) && p.i+3 < len(p.s) && p.s[p.i] == ' ' && isDigit(p.s[p.i+1]) && isDigit(p.s[p.i+2]) && p.s[p.i+3] == ':' {
		for p.i++; !p.eof() && isScalarByte(p.s[p.i]); p.i++ {
		}
		tok = p.s[start:p.i]
	}
	if tok == "" {
		return nil, p.errf("expected a value")
	}
	switch tok {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "inf", "+inf":
		return math.Inf(1), nil
	case "-inf":
		return math.Inf(-1), nil
	case "nan", "+nan", "-nan":
		return math.NaN(), nil
	}
	if isDate(tok) || strings.Contains(tok, ":") {
		if validDatetime(tok) {
			return Datetime(tok), nil
		}
		return nil, p.errf("invalid date or time")
	}
	if v, ok := parseInt(tok); ok {
		return v, nil
	}
	if v, ok := parseFloat(tok); ok {
		return v, nil
	}
	return nil, p.errf("expected a value")
}

func isScalarByte(c byte) bool { return isBare(c) || c == '+' || c == '.' || c == ':' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isDate says whether s starts with YYYY-MM-DD.
func isDate(s string) bool {
	if len(s) < 10 {
		return false
	}
	for i := range 10 {
		if i == 4 || i == 7 {
			if s[i] != '-' {
				return false
			}
		} else if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func validDatetime(s string) bool {
	if len(s) > 10 && isDate(s) && (s[10] == ' ' || s[10] == 't') {
		s = s[:10] + "T" + s[11:]
	}
	if n := len(s); n > 0 && s[n-1] == 'z' {
		s = s[:n-1] + "Z"
	}
	// Seconds may be left out, as TOML 1.1 allows.
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04Z07:00", "2006-01-02T15:04:05.999999999", "2006-01-02T15:04",
		"2006-01-02", "15:04:05.999999999", "15:04"} {
		if _, err := time.Parse(layout, s); err == nil {
			return true
		}
	}
	return false
}

// digits checks that s is digits of base with each _ between two digits,
// and returns it without the underscores.
func digits(s string, base int) (string, bool) {
	if s == "" {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' {
			if i == 0 || i == len(s)-1 || s[i+1] == '_' {
				return "", false
			}
			continue
		}
		if _, err := strconv.ParseUint(string(c), base, 8); err != nil {
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

func parseInt(tok string) (int64, bool) {
	for _, pre := range []struct {
		p    string
		base int
	}{{"0x", 16}, {"0o", 8}, {"0b", 2}} {
		if rest, ok := strings.CutPrefix(tok, pre.p); ok {
			d, ok := digits(rest, pre.base)
			if !ok {
				return 0, false
			}
			v, err := strconv.ParseInt(d, pre.base, 64)
			return v, err == nil
		}
	}
	sign, rest := "", tok
	if rest != "" && (rest[0] == '+' || rest[0] == '-') {
		sign, rest = rest[:1], rest[1:]
	}
	d, ok := digits(rest, 10)
	if !ok || len(d) > 1 && d[0] == '0' {
		return 0, false
	}
	v, err := strconv.ParseInt(sign+d, 10, 64)
	return v, err == nil
}

func parseFloat(tok string) (float64, bool) {
	s := tok
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	mant, exp, hasExp := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, hasFrac := strings.Cut(mant, ".")
	if !hasExp && !hasFrac {
		return 0, false
	}
	d, ok := digits(intPart, 10)
	if !ok || len(d) > 1 && d[0] == '0' {
		return 0, false
	}
	if hasFrac {
		if _, ok := digits(frac, 10); !ok {
			return 0, false
		}
	}
	if hasExp {
		e := strings.TrimLeft(exp, "+-")
		if len(exp)-len(e) > 1 {
			return 0, false
		}
		if _, ok := digits(e, 10); !ok {
			return 0, false
		}
	}
	v, err := strconv.ParseFloat(strings.ReplaceAll(tok, "_", ""), 64)
	return v, err == nil
}

// keyString joins a dotted key, quoting the parts that are not bare.
func keyString(parts []string) string {
	var b strings.Builder
	for i, k := range parts {
		if i > 0 {
			b.WriteByte('.')
		}
		bare := k != ""
		for j := 0; j < len(k); j++ {
			bare = bare && isBare(k[j])
		}
		if bare {
			b.WriteString(k)
		} else {
			b.WriteString(Quote(k))
		}
	}
	return b.String()
}
