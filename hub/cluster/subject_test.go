package cluster

import (
	"regexp"
	"testing"
)

var safeToken = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestSubjectToken(t *testing.T) {
	for _, id := range []string{
		"dev42", "a.b", "*", ">", "a b", "a.*.>", "$SYS", "ünï", "x\x00y", "-", "_kv",
		"(dev)!#%:=@$'", string(make([]byte, 300)),
	} {
		tok := SubjectToken(id)
		if !safeToken.MatchString(tok) {
			t.Errorf("SubjectToken(%q) = %q is not a safe token", id, tok)
		}
		back, err := ParseSubjectToken(tok)
		if err != nil || back != id {
			t.Errorf("ParseSubjectToken(%q) = %q, %v; want %q", tok, back, err, id)
		}
	}
	for _, bad := range []string{"a.b", "ZGV2\nNDI", "ZGV2NDI=", "ZGV2NDJ", "a b", "+/"} {
		if _, err := ParseSubjectToken(bad); err == nil {
			t.Errorf("ParseSubjectToken(%q) accepted", bad)
		}
	}
}

func FuzzSubjectToken(f *testing.F) {
	for _, s := range []string{"", "dev42", "a.*.>", "a b", "ZGV2NDI", "ZGV2\nNDI"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := SubjectToken(s)
		if s != "" && !safeToken.MatchString(tok) {
			t.Fatalf("SubjectToken(%q) = %q is not a safe token", s, tok)
		}
		if back, err := ParseSubjectToken(tok); err != nil || back != s {
			t.Fatalf("round trip of %q: %q, %v", s, back, err)
		}
		// Any text that parses must be the one token of what it decodes
		// to, so two tokens never name the same id.
		if id, err := ParseSubjectToken(s); err == nil && SubjectToken(id) != s {
			t.Fatalf("%q parses to %q whose token is %q", s, id, SubjectToken(id))
		}
	})
}
