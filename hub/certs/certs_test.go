package certs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestEnsureKeepsAndReissues(t *testing.T) {
	dir := t.TempDir()
	c1, err := Ensure(dir, []string{"127.0.0.1", "hub.example"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{caKeyFile, certKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st.Mode(), err)
		}
	}
	ca1, _ := os.ReadFile(filepath.Join(dir, CAFile))
	c2, err := Ensure(dir, []string{"127.0.0.1", "hub.example"})
	if err != nil {
		t.Fatal(err)
	}
	if !c1.Leaf.Equal(c2.Leaf) {
		t.Fatal("a second start reissued the server certificate")
	}
	c3, err := Ensure(dir, []string{"other.example"})
	if err != nil {
		t.Fatal(err)
	}
	if c3.Leaf.Equal(c1.Leaf) || c3.Leaf.VerifyHostname("other.example") != nil {
		t.Fatal("new host names did not get a new certificate")
	}
	ca2, _ := os.ReadFile(filepath.Join(dir, CAFile))
	if string(ca1) != string(ca2) {
		t.Fatal("the CA was replaced")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca2)
	if _, err := c3.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example"}); err != nil {
		t.Fatalf("server certificate does not chain to the CA: %v", err)
	}
}
