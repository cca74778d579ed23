package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeThumbprint(t *testing.T) {
	const sha256Hex = "3f8a1c0e9b7d6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877"
	colons := func(s string) string {
		var parts []string
		for i := 0; i < len(s); i += 2 {
			parts = append(parts, s[i:i+2])
		}
		return strings.Join(parts, ":")
	}
	for _, in := range []string{
		sha256Hex,
		strings.ToUpper(sha256Hex),
		colons(sha256Hex),
		strings.ToUpper(colons(sha256Hex)),
		" " + strings.ReplaceAll(colons(sha256Hex), ":", " ") + "\t",
	} {
		got, err := NormalizeThumbprint(in)
		if err != nil || got != sha256Hex {
			t.Errorf("NormalizeThumbprint(%q) = %q, %v; want %q", in, got, err, sha256Hex)
		}
	}
	// SHA-1, as Azure's tools print it.
	sha1Hex := strings.Repeat("ab", 20)
	if got, err := NormalizeThumbprint(strings.ToUpper(colons(sha1Hex))); err != nil || got != sha1Hex {
		t.Errorf("SHA-1: %q %v", got, err)
	}
	for _, bad := range []string{
		"",
		"12:34",
		sha256Hex + "00",
		sha256Hex[:62],
		sha256Hex[:63] + "g",
		strings.Replace(sha256Hex, "3f", "3-", 1),
		strings.Repeat("a", 10000),
	} {
		if got, err := NormalizeThumbprint(bad); !errors.Is(err, ErrThumbprint) {
			t.Errorf("NormalizeThumbprint(%.20q…) = %q, %v; want ErrThumbprint", bad, got, err)
		}
	}
}

func TestThumbprints(t *testing.T) {
	s256, s1 := Thumbprints([]byte("abc"))
	// The well-known digests of "abc".
	if s256 != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" || s1 != "a9993e364706816aba3e25717850c26c9cd0d89d" {
		t.Fatalf("Thumbprints = %s, %s", s256, s1)
	}
}

func FuzzNormalizeThumbprint(f *testing.F) {
	f.Add("AB:CD")
	f.Add(strings.Repeat("Ab:", 32))
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeThumbprint(s)
		if err != nil {
			return
		}
		if len(n) != 64 && len(n) != 40 || strings.Trim(n, "0123456789abcdef") != "" {
			t.Fatalf("NormalizeThumbprint(%q) = %q", s, n)
		}
		if again, err := NormalizeThumbprint(n); err != nil || again != n {
			t.Fatalf("not idempotent: %q → %q, %v", n, again, err)
		}
	})
}
