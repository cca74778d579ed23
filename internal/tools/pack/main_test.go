package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stage makes a release folder as scripts/release.sh does, its files
// written in an order other than their names' and given the times and
// modes a checkout happens to have.
func stage(t *testing.T, root string, mtime time.Time) string {
	t.Helper()
	dir := filepath.Join(root, "tether_1.0.0_linux_amd64")
	files := []struct {
		name string
		mode os.FileMode
		body string
	}{
		{"tetherd", 0o700, "hub binary"},
		{"deploy/tetherd.service", 0o664, "[Unit]\n"},
		{"README.md", 0o600, "# Tether\n"},
		{"LICENSE", 0o644, "Apache-2.0\n"},
		{"tether", 0o755, "agent binary"},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.body), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// epoch stands for SOURCE_DATE_EPOCH: 2026-01-01.
var epoch = time.Unix(1767225600, 0).UTC()

// packed stages a release folder and packs it into an archive of kind ext.
func packed(t *testing.T, ext string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "r"+ext)
	if err := writeArchive(out, stage(t, t.TempDir(), time.Now()), epoch); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestArchivesAreReproducible(t *testing.T) {
	for _, ext := range []string{".tar.gz", ".zip"} {
		t.Run(ext, func(t *testing.T) {
			a := filepath.Join(t.TempDir(), "a"+ext)
			b := filepath.Join(t.TempDir(), "b"+ext)
			if err := writeArchive(a, stage(t, t.TempDir(), time.Now()), epoch); err != nil {
				t.Fatal(err)
			}
			if err := writeArchive(b, stage(t, t.TempDir(), time.Now().Add(-48*time.Hour)), epoch); err != nil {
				t.Fatal(err)
			}
			ab, _ := os.ReadFile(a)
			bb, _ := os.ReadFile(b)
			if !bytes.Equal(ab, bb) {
				t.Fatalf("the same files staged at other times and places packed to different bytes (%d and %d)", len(ab), len(bb))
			}
		})
	}
}

// want is what every archive holds, in this order: names sorted, modes
// from the executable bit alone.
var want = []struct {
	name string
	mode int64
}{
	{"tether_1.0.0_linux_amd64/", 0o755},
	{"tether_1.0.0_linux_amd64/LICENSE", 0o644},
	{"tether_1.0.0_linux_amd64/README.md", 0o644},
	{"tether_1.0.0_linux_amd64/deploy/", 0o755},
	{"tether_1.0.0_linux_amd64/deploy/tetherd.service", 0o644},
	{"tether_1.0.0_linux_amd64/tether", 0o755},
	{"tether_1.0.0_linux_amd64/tetherd", 0o755},
}

func TestTarGzEntries(t *testing.T) {
	f, err := os.Open(packed(t, ".tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if gz.Name != "" || !gz.ModTime.IsZero() {
		t.Errorf("gzip header carries name %q, time %v", gz.Name, gz.ModTime)
	}
	tr := tar.NewReader(gz)
	for i := 0; ; i++ {
		h, err := tr.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Fatalf("%d entries, want %d", i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(want) || h.Name != want[i].name || h.Mode != want[i].mode {
			t.Fatalf("entry %d: %s %04o", i, h.Name, h.Mode)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(epoch) {
			t.Errorf("%s: owner %d:%d (%q:%q), time %v", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
		if strings.HasSuffix(h.Name, "/tetherd") {
			body, _ := io.ReadAll(tr)
			if string(body) != "hub binary" {
				t.Errorf("tetherd holds %q", body)
			}
		}
	}
}

func TestZipEntries(t *testing.T) {
	zr, err := zip.OpenReader(packed(t, ".zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if len(zr.File) != len(want) {
		t.Fatalf("%d entries, want %d", len(zr.File), len(want))
	}
	for i, f := range zr.File {
		mode := int64(f.Mode().Perm())
		if f.Name != want[i].name || mode != want[i].mode || !f.Modified.Equal(epoch) {
			t.Errorf("entry %d: %s %04o %v", i, f.Name, mode, f.Modified)
		}
	}
}

func TestSums(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"tether_1_linux_amd64.tar.gz": "a",
		"tether_1_windows_amd64.zip":  "b",
		"tetherd_1_amd64.deb":         "c",
		"notes.txt":                   "not a release file",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeSums(dir); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	wantSums := sum("a") + "  tether_1_linux_amd64.tar.gz\n" +
		sum("b") + "  tether_1_windows_amd64.zip\n" +
		sum("c") + "  tetherd_1_amd64.deb\n"
	if string(got) != wantSums {
		t.Fatalf("SHA256SUMS:\n%s\nwant:\n%s", got, wantSums)
	}
}

func TestErrors(t *testing.T) {
	root := t.TempDir()
	dir := stage(t, root, time.Now())

	if err := writeArchive(filepath.Join(root, "r.tar.xz"), dir, epoch); err == nil || !strings.Contains(err.Error(), ".tar.gz or .zip") {
		t.Errorf("unknown archive kind: %v", err)
	}
	if err := writeArchive(filepath.Join(root, "r.tar.gz"), filepath.Join(dir, "LICENSE"), epoch); err == nil || !strings.Contains(err.Error(), "not a folder") {
		t.Errorf("a file to pack as a folder: %v", err)
	}
	if err := os.Symlink("tetherd", filepath.Join(dir, "tetherd-link")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "r.tar.gz")
	if err := writeArchive(out, dir, epoch); err == nil || !strings.Contains(err.Error(), "tetherd-link") {
		t.Errorf("a link in the folder: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed pack left %s behind (%v)", out, err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, ".pack-*")); len(left) > 0 {
		t.Errorf("a failed pack left %v behind", left)
	}

	for _, s := range []string{"", "yesterday", "-1"} {
		if _, err := sourceDate(s); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
			t.Errorf("SOURCE_DATE_EPOCH=%q: %v", s, err)
		}
	}
	if err := writeSums(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no .tar.gz") {
		t.Errorf("sums of an empty folder: %v", err)
	}
	if err := run([]string{"archive", "only-one"}); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("wrong arguments: %v", err)
	}
}
