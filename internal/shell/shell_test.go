package shell

import (
	"os/exec"
	"testing"
)

// TestQuoteRoundTrips: each word, quoted, reaches a real shell's command
// as the one argument it was.
func TestQuoteRoundTrips(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, w := range []string{"plain/path", "with space", "it's", `a"b`, "$HOME", "a\\b", "*?[x]", "~user", "a;b|c&d", "tab\there", "!bang"} {
		out, err := exec.Command(sh, "-c", "printf %s "+Quote(w)).Output()
		if err != nil {
			t.Fatalf("%q: %v", w, err)
		}
		if string(out) != w {
			t.Errorf("Quote(%q) = %s reached the shell as %q", w, Quote(w), out)
		}
	}
	if got := Quote("/var/lib/tether"); got != "/var/lib/tether" {
		t.Errorf("a path with nothing special was quoted: %s", got)
	}
}
