package wire

// A session stream's headers are JSON, and four of them are written and
// read for each stream, by the service, the hub and the device:
// encoding/json's reflection was a tenth of a stream's setup CPU in the
// service and a twentieth in the hub. The three header types are flat
// objects of strings, integers and a bool, so they are written and read
// here directly, byte for byte as encoding/json writes and reads them.
// Whatever this code does not know for sure (a character that JSON
// escapes, a key in another case, a null, a number with a fraction) goes
// to encoding/json, which then decides, errors included.

import (
	"strconv"
)

// appendMuxJSON appends v's JSON as encoding/json.Marshal writes it, and
// reports false, with b as it was, when it leaves v to encoding/json.
func appendMuxJSON(b []byte, v any) ([]byte, bool) {
	start := len(b)
	w := jsonWriter{b: b, ok: true}
	switch h := v.(type) {
	case MuxOpen:
		w.muxOpen(&h)
	case *MuxOpen:
		w.muxOpen(h)
	case MuxRequest:
		w.muxRequest(&h)
	case *MuxRequest:
		w.muxRequest(h)
	case MuxAnswer:
		w.muxAnswer(&h)
	case *MuxAnswer:
		w.muxAnswer(h)
	default:
		return b, false
	}
	if !w.ok {
		return w.b[:start], false
	}
	return w.b, true
}

// jsonWriter writes an object's fields in order; ok turns false at the
// first string encoding/json would escape.
type jsonWriter struct {
	b  []byte
	ok bool
	n  int // fields written
}

func (w *jsonWriter) key(k string) {
	if w.n == 0 {
		w.b = append(w.b, '{')
	} else {
		w.b = append(w.b, ',')
	}
	w.n++
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *jsonWriter) str(k, s string, omitEmpty bool) {
	if omitEmpty && s == "" {
		return
	}
	for i := 0; i < len(s); i++ {
		if !plainJSON(s[i]) {
			w.ok = false
			return
		}
	}
	w.key(k)
	w.b = append(w.b, '"')
	w.b = append(w.b, s...)
	w.b = append(w.b, '"')
}

func (w *jsonWriter) int(k string, n int64, omitEmpty bool) {
	if omitEmpty && n == 0 {
		return
	}
	w.key(k)
	w.b = strconv.AppendInt(w.b, n, 10)
}

func (w *jsonWriter) end() {
	if w.n == 0 {
		w.b = append(w.b, '{')
	}
	w.b = append(w.b, '}')
}

func (w *jsonWriter) muxOpen(h *MuxOpen) {
	w.str("deviceId", h.DeviceID, false)
	w.str("moduleId", h.ModuleID, true)
	w.str("name", h.Name, false)
	w.int("connectTimeoutMs", h.ConnectTimeoutMs, true)
	w.int("responseTimeoutMs", h.ResponseTimeoutMs, true)
	w.str("userAgent", h.UserAgent, true)
	w.end()
}

func (w *jsonWriter) muxRequest(h *MuxRequest) {
	w.str("name", h.Name, false)
	w.str("rid", h.RID, false)
	w.str("streamId", h.StreamID, false)
	w.end()
}

func (w *jsonWriter) muxAnswer(h *MuxAnswer) {
	w.int("status", int64(h.Status), false)
	if h.Accepted {
		w.key("accepted")
		w.b = append(w.b, "true"...)
	}
	w.int("deviceStatus", int64(h.DeviceStatus), true)
	w.str("streamId", h.StreamID, true)
	w.str("errorCode", h.ErrorCode, true)
	w.str("message", h.Message, true)
	w.end()
}

// plainJSON is whether encoding/json writes c, in a string, as it is:
// printable ASCII but for the quote, the backslash and the three it
// escapes for HTML.
func plainJSON(c byte) bool {
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// jsonValue is one value of a flat object: a string, an integer or a
// bool.
type jsonValue struct {
	kind byte // 's', 'n' or 'b'
	s    string
	n    int64
	b    bool
}

// readMuxJSON reads b into v as encoding/json.Unmarshal would, and
// reports false, leaving v as it was, when it leaves b to encoding/json.
func readMuxJSON(b []byte, v any) bool {
	switch h := v.(type) {
	case *MuxOpen:
		o := *h
		if !readFlat(b, o.field) {
			return false
		}
		*h = o
	case *MuxRequest:
		r := *h
		if !readFlat(b, r.field) {
			return false
		}
		*h = r
	case *MuxAnswer:
		a := *h
		if !readFlat(b, a.field) {
			return false
		}
		*h = a
	default:
		return false
	}
	return true
}

func (h *MuxOpen) field(k string, v jsonValue) bool {
	switch k {
	case "deviceId":
		return v.str(&h.DeviceID)
	case "moduleId":
		return v.str(&h.ModuleID)
	case "name":
		return v.str(&h.Name)
	case "connectTimeoutMs":
		return v.int64(&h.ConnectTimeoutMs)
	case "responseTimeoutMs":
		return v.int64(&h.ResponseTimeoutMs)
	case "userAgent":
		return v.str(&h.UserAgent)
	}
	return false
}

func (h *MuxRequest) field(k string, v jsonValue) bool {
	switch k {
	case "name":
		return v.str(&h.Name)
	case "rid":
		return v.str(&h.RID)
	case "streamId":
		return v.str(&h.StreamID)
	}
	return false
}

func (h *MuxAnswer) field(k string, v jsonValue) bool {
	switch k {
	case "status":
		return v.int(&h.Status)
	case "accepted":
		if v.kind != 'b' {
			return false
		}
		h.Accepted = v.b
		return true
	case "deviceStatus":
		return v.int(&h.DeviceStatus)
	case "streamId":
		return v.str(&h.StreamID)
	case "errorCode":
		return v.str(&h.ErrorCode)
	case "message":
		return v.str(&h.Message)
	}
	return false
}

// str, int64 and int set *p to v when v is of p's kind (an int in range).
func (v jsonValue) str(p *string) bool {
	if v.kind != 's' {
		return false
	}
	*p = v.s
	return true
}

func (v jsonValue) int64(p *int64) bool {
	if v.kind != 'n' {
		return false
	}
	*p = v.n
	return true
}

func (v jsonValue) int(p *int) bool {
	if v.kind != 'n' || int64(int(v.n)) != v.n {
		return false
	}
	*p = int(v.n)
	return true
}

// readFlat reads b, a JSON object of plain strings (plainJSON, '<', '>'
// and '&' allowed), integers and bools, handing each field to set; it
// reports false at anything else, or when set does.
func readFlat(b []byte, set func(string, jsonValue) bool) bool {
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		k, j, ok := readString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, j)
		if i == len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		var v jsonValue
		if v, i, ok = readValue(b, i); !ok || !set(k, v) {
			return false
		}
		i = skipSpace(b, i)
		if i == len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// readString reads a string without escapes at b[i], of printable ASCII.
func readString(b []byte, i int) (string, int, bool) {
	if i == len(b) || b[i] != '"' {
		return "", i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return "", i, false
		}
	}
	return "", i, false
}

func readValue(b []byte, i int) (jsonValue, int, bool) {
	if i == len(b) {
		return jsonValue{}, i, false
	}
	switch c := b[i]; {
	case c == '"':
		s, j, ok := readString(b, i)
		return jsonValue{kind: 's', s: s}, j, ok
	case c == 't' && hasWord(b[i:], "true"):
		return jsonValue{kind: 'b', b: true}, i + 4, true
	case c == 'f' && hasWord(b[i:], "false"):
		return jsonValue{kind: 'b'}, i + 5, true
	case c == '-' || (c >= '0' && c <= '9'):
		j := i
		if b[j] == '-' {
			j++
		}
		digits := j
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		// An integer as JSON writes one: no fraction, no exponent, no
		// leading zero.
		if j == digits || (b[digits] == '0' && j-digits > 1) ||
			(j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E')) {
			return jsonValue{}, i, false
		}
		n, err := strconv.ParseInt(string(b[i:j]), 10, 64)
		if err != nil {
			return jsonValue{}, i, false
		}
		return jsonValue{kind: 'n', n: n}, j, true
	}
	return jsonValue{}, i, false
}

// hasWord is whether b begins with the literal w, not followed by more of
// a word.
func hasWord(b []byte, w string) bool {
	if len(b) < len(w) || string(b[:len(w)]) != w {
		return false
	}
	if len(b) == len(w) {
		return true
	}
	c := b[len(w)]
	return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
}
