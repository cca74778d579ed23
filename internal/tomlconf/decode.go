package tomlconf

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// Unmarshaler is a field that reads its value itself, as parsed: a
// string, int64, float64, bool, Datetime, []any or map[string]any.
type Unmarshaler interface {
	UnmarshalTOML(v any) error
}

// FieldError is a value a field does not take.
type FieldError struct {
	Line int
	Key  string
	Err  error
}

func (e *FieldError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

func (e *FieldError) Unwrap() error { return e.Err }

// Decode parses data and stores its top-level keys in the struct v points
// to: each into the field whose `toml` tag names it, a string field taking
// a string and a field whose pointer is an Unmarshaler taking any value.
// It returns the keys the struct has no field for (with the keys of
// tables under them), dotted, in the document's order. A syntax error is
// a *ParseError, a value a field does not take a *FieldError.
func Decode(data []byte, v any) (unknown []string, err error) {
	d, err := parse(data)
	if err != nil {
		return nil, err
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return nil, errors.New("tomlconf: Decode needs a pointer to a struct")
	}
	fields := map[string]reflect.Value{}
	st := rv.Elem().Type()
	for i := range st.NumField() {
		name, _, _ := strings.Cut(st.Field(i).Tag.Get("toml"), ",")
		if name != "" && name != "-" {
			fields[name] = rv.Elem().Field(i)
		}
	}
	for _, k := range d.root.keys {
		f, ok := fields[k]
		if !ok {
			continue
		}
		key := keyString([]string{k})
		line := d.lines[key]
		val := plain(d.root.vals[k])
		if u, ok := f.Addr().Interface().(Unmarshaler); ok {
			if err := u.UnmarshalTOML(val); err != nil {
				return nil, &FieldError{Line: line, Key: key, Err: err}
			}
			continue
		}
		if f.Kind() != reflect.String {
			return nil, fmt.Errorf("tomlconf: field for key %s is a %s, not a string or an Unmarshaler", key, f.Type())
		}
		s, ok := val.(string)
		if !ok {
			return nil, &FieldError{Line: line, Key: key, Err: fmt.Errorf("%s: want a string, not %s", key, typeName(val))}
		}
		f.SetString(s)
	}
	seen := map[string]bool{}
	for _, k := range d.order {
		top, _, _ := strings.Cut(k, ".")
		if strings.HasPrefix(k, `"`) {
			top = k // a quoted top key is never a field's name
		}
		if _, ok := fields[top]; ok || seen[k] {
			continue
		}
		seen[k] = true
		unknown = append(unknown, k)
	}
	return unknown, nil
}

// plain turns the parser's tables into maps and arrays of tables into
// []any.
func plain(v any) any {
	switch v := v.(type) {
	case *table:
		m := make(map[string]any, len(v.vals))
		for k, e := range v.vals {
			m[k] = plain(e)
		}
		return m
	case *tableArray:
		out := make([]any, len(v.tables))
		for i, t := range v.tables {
			out[i] = plain(t)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = plain(e)
		}
		return out
	}
	return v
}

// typeName names a value's TOML type for an error, never the value.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case Datetime:
		return "a date or time"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

// Quote writes s as a TOML basic string.
func Quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
