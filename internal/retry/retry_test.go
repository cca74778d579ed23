package retry

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// TestReporterThinsOutRepeats: a new reason is logged at once, the same
// one at most once per Every, with the count of attempts left unlogged.
func TestReporterThinsOutRepeats(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	now := time.Unix(0, 0)
	r := Reporter{Every: 30 * time.Second, Now: func() time.Time { return now }}
	refused, unknown := errors.New("connection refused"), errors.New("no such host")
	steps := []struct {
		after time.Duration
		err   error
	}{
		{0, refused},                // logged: first
		{time.Second, refused},      // quiet
		{2 * time.Second, refused},  // quiet
		{5 * time.Second, unknown},  // logged: new reason, 2 unlogged
		{10 * time.Second, unknown}, // quiet
		{30 * time.Second, unknown}, // logged: 30 s since the last line, 1 unlogged
	}
	for i, s := range steps {
		now = now.Add(s.after)
		r.Log(log, "waiting", s.err, "attempt", i+1)
	}
	want := `level=WARN msg=waiting attempt=1 err="connection refused"
level=WARN msg=waiting attempt=4 unlogged=2 err="no such host"
level=WARN msg=waiting attempt=6 unlogged=1 err="no such host"
`
	if got := buf.String(); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
}
