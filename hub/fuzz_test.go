package hub

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzRESTHeaders feeds the parsers of REST headers and query values
// untrusted text: the streaming timeout headers, ?since= and If-Match.
func FuzzRESTHeaders(f *testing.F) {
	for _, s := range []string{
		"60", "0.5", " 1e3 ", "-1", "0", "NaN", "+Inf", "1e400", "4.9e-324", "0x10", "",
		"15m", "1h30m", "-5m", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123456789+02:00",
		`"abc"`, `W/"abc"`, `W/`, `""`, `"`,
	} {
		f.Add(s)
	}
	const def, max = 60 * time.Second, 120 * time.Second
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, v string) {
		r := &http.Request{Header: http.Header{}}
		r.Header.Set("x-timeout", v)
		d, err := timeoutHeader(r, "x-timeout", def, max)
		if err == nil && (d < 0 || d > max) {
			t.Fatalf("timeoutHeader(%q) = %v, outside [0, %v]", v, d, max)
		}
		if v == "" && (err != nil || d != def) {
			t.Fatalf("timeoutHeader(empty) = %v, %v; want the default", d, err)
		}

		if since, err := parseSince(v, now); err == nil && !strings.Contains(v, "T") && since.After(now) {
			t.Fatalf("parseSince(%q) = %v, after now for a duration", v, since)
		}

		e := unquoteETag(v)
		if strings.HasPrefix(e, `"`) || strings.HasSuffix(e, `"`) {
			t.Fatalf("unquoteETag(%q) = %q, still quoted", v, e)
		}
	})
}
