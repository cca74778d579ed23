package certs

import (
	"bytes"
	"crypto/x509"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var allFiles = []string{CAFile, caKeyFile, certFile, certKeyFile}

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
	key1, _ := os.ReadFile(filepath.Join(dir, certKeyFile))
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
	if key2, _ := os.ReadFile(filepath.Join(dir, certKeyFile)); !bytes.Equal(key1, key2) {
		t.Fatal("reissuing the certificate replaced the server's key file")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca2)
	if _, err := c3.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example"}); err != nil {
		t.Fatalf("server certificate does not chain to the CA: %v", err)
	}
}

// snapshot is every entry of dir (temporary files included) with its bytes.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name())) // a folder in a file's place reads as ""
		m[e.Name()] = string(b)
	}
	return m
}

func TestEnsureFreshFolderThenReloadsIdentically(t *testing.T) {
	dir := t.TempDir()
	c1, err := Ensure(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	first := snapshot(t, dir)
	if got := slices.Sorted(maps.Keys(first)); !slices.Equal(got, slices.Sorted(slices.Values(allFiles))) {
		t.Fatalf("a fresh folder holds %v, want %v", got, allFiles)
	}
	stats := map[string]os.FileInfo{}
	for _, f := range allFiles {
		stats[f], _ = os.Stat(filepath.Join(dir, f))
	}
	c2, err := Ensure(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !c1.Leaf.Equal(c2.Leaf) {
		t.Fatal("a full folder gave a different certificate")
	}
	if again := snapshot(t, dir); !maps.Equal(first, again) {
		t.Fatal("loading a full folder changed its files")
	}
	for _, f := range allFiles {
		st, _ := os.Stat(filepath.Join(dir, f))
		if !st.ModTime().Equal(stats[f].ModTime()) || !os.SameFile(st, stats[f]) {
			t.Errorf("%s was written again", f)
		}
	}
}

// TestEnsureRefusesPartialOrBrokenFolder: for each way a data folder can
// have lost or broken part of its key material, Ensure refuses, names the
// file, says how to recover, and leaves every file as it was.
func TestEnsureRefusesPartialOrBrokenFolder(t *testing.T) {
	otherCA := t.TempDir()
	if _, err := Ensure(otherCA, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	remove := func(name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	write := func(name, content string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A folder where the file was: unreadable even by root.
	folder := func(name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			remove(name)(t, dir)
			if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	copyFrom := func(src, name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			b, err := os.ReadFile(filepath.Join(src, name))
			if err != nil {
				t.Fatal(err)
			}
			write(name, string(b))(t, dir)
		}
	}
	cases := []struct {
		name   string
		break_ func(t *testing.T, dir string)
		file   string // named in the error
		want   string // also in the error: the way out
	}{
		{"missing ca.pem", remove(CAFile), CAFile, "--ca"},
		{"missing ca-key.pem", remove(caKeyFile), caKeyFile, "Restore ca-key.pem from a backup"},
		{"unreadable ca-key.pem", folder(caKeyFile), caKeyFile, "start over with a new CA"},
		{"unreadable ca.pem", folder(CAFile), CAFile, "start over with a new CA"},
		{"corrupt ca.pem", write(CAFile, "not a certificate\n"), CAFile, "restore ca.pem and ca-key.pem"},
		{"corrupt ca-key.pem", write(caKeyFile, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), caKeyFile, "restore ca.pem and ca-key.pem"},
		{"ca-key.pem of another CA", copyFrom(otherCA, caKeyFile), caKeyFile, "restore ca.pem and ca-key.pem"},
		{"both CA files gone, server pair there", func(t *testing.T, dir string) { remove(CAFile)(t, dir); remove(caKeyFile)(t, dir) }, certKeyFile, "the CA that signed"},
		{"missing server.pem", remove(certFile), certFile, "move server-key.pem out of"},
		{"missing server-key.pem", remove(certKeyFile), certKeyFile, "move server.pem out of"},
		{"unreadable server-key.pem", folder(certKeyFile), certKeyFile, "move both out of"},
		{"corrupt server.pem", write(certFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), certFile, "move both out of"},
		{"server-key.pem of another hub", copyFrom(otherCA, certKeyFile), certKeyFile, "move both out of"},
	}
	if os.Geteuid() != 0 {
		cases = append(cases, struct {
			name   string
			break_ func(t *testing.T, dir string)
			file   string
			want   string
		}{"ca-key.pem mode 000", func(t *testing.T, dir string) { os.Chmod(filepath.Join(dir, caKeyFile), 0) }, caKeyFile, "permission denied"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Ensure(dir, []string{"127.0.0.1"}); err != nil {
				t.Fatal(err)
			}
			tc.break_(t, dir)
			before := snapshot(t, dir)
			_, err := Ensure(dir, []string{"127.0.0.1"})
			if err == nil {
				t.Fatal("Ensure accepted the folder")
			}
			msg := err.Error()
			if !strings.Contains(msg, filepath.Join(dir, tc.file)) || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q\ndoes not name %s and say %q", msg, tc.file, tc.want)
			}
			if after := snapshot(t, dir); !maps.Equal(before, after) {
				t.Errorf("a refused start changed the folder:\nbefore %v\nafter  %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
			}
		})
	}
}

// A server certificate the CA did not sign (the CA restored from another
// backup than the certificate) is reissued under the CA, for the same key.
func TestEnsureReissuesUnderTheCAItHas(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	for _, d := range []string{dir, other} {
		if _, err := Ensure(d, []string{"127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{CAFile, caKeyFile} {
		b, _ := os.ReadFile(filepath.Join(other, f))
		os.WriteFile(filepath.Join(dir, f), b, 0o600)
	}
	key, _ := os.ReadFile(filepath.Join(dir, certKeyFile))
	c, err := Ensure(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, CAFile))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatalf("served certificate does not chain to ca.pem: %v", err)
	}
	if k, _ := os.ReadFile(filepath.Join(dir, certKeyFile)); !bytes.Equal(k, key) {
		t.Fatal("the server key file was replaced")
	}
}

func TestWriteNewNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key.pem")
	if err := writeNew(p, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o", st.Mode().Perm())
	}
	err := writeNew(p, []byte("second"), 0o600)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("writing over an existing key: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "first" {
		t.Fatalf("the key file now holds %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}
