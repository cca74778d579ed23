package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A recording plays its output in order, a long pause cut to the cap;
// what is not asciicast v2 is an error naming the line.
func TestPlayCast(t *testing.T) {
	cast := `{"version": 2, "width": 80, "height": 24, "timestamp": 1}
[0.000100, "o", "one "]
[0.010000, "r", "100x30"]
[3600.0, "o", "two 🙂\r\n"]
`
	var out strings.Builder
	start := time.Now()
	if err := playCast(context.Background(), strings.NewReader(cast), &out, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("an hour's pause took %v to play, want it cut", took)
	}
	if out.String() != "one two 🙂\r\n" {
		t.Errorf("played %q", out.String())
	}
	for in, want := range map[string]string{
		"":                              "empty",
		`{"version": 1}` + "\n":         "not asciicast v2",
		`{"version": 2}` + "\nnope\n":   "line 2: not an event",
		`{"version": 2}` + "\n[1, 2]\n": "line 2: not an event",
	} {
		err := playCast(context.Background(), strings.NewReader(in), &out, time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	if _, _, err := tether(t, context.Background(), "logs", "--replay", "X", "--json"); err == nil || !strings.Contains(err.Error(), "takes no other flag") {
		t.Errorf("--replay with --json: %v", err)
	}
}
