// Command pack writes Tether's release archives and their checksums so
// that the same files give the same bytes on any machine: entries sorted
// by name, every time set to SOURCE_DATE_EPOCH, owner root (0:0), modes
// 0755 or 0644 from the executable bit alone, and gzip with no name or
// time. GNU tar's options for this differ from BSD tar's, and zip is often
// not installed; archive/tar and archive/zip behave the same everywhere.
//
//	pack archive OUT.tar.gz|OUT.zip DIR   DIR's files under DIR's name
//	pack sums DIR                         DIR/SHA256SUMS of DIR's .tar.gz, .zip and .deb
package main

import (
	"archive/tar"
	"archive/zip"
	"compress/flate"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

const usage = `usage: pack archive OUT.tar.gz|OUT.zip DIR
       pack sums DIR
SOURCE_DATE_EPOCH (seconds since 1970) sets every time in an archive`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 3 && args[0] == "archive":
		epoch, err := sourceDate(os.Getenv("SOURCE_DATE_EPOCH"))
		if err != nil {
			return err
		}
		return writeArchive(args[1], args[2], epoch)
	case len(args) == 2 && args[0] == "sums":
		return writeSums(args[1])
	}
	return errors.New(usage)
}

// sourceDate parses SOURCE_DATE_EPOCH, which must be set: an archive
// stamped with the time it was made would differ on every build.
func sourceDate(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("SOURCE_DATE_EPOCH is not set: give the commit's time, git log -1 --format=%ct")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// entry is one file or folder of an archive.
type entry struct {
	name string // slash-separated, under the archive's top folder
	src  string // the file on disk; empty for a folder
	mode int64  // 0755 or 0644
	size int64
}

// collect lists dir's folders and regular files, sorted by name, under
// dir's own name. Anything else (a link, a device) is an error: what a
// user unpacks is exactly what was staged.
func collect(dir string) ([]entry, error) {
	dir = filepath.Clean(dir)
	top := filepath.Base(dir)
	var out []entry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := path.Join(top, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			out = append(out, entry{name: name + "/", mode: 0o755})
		case info.Mode().IsRegular():
			mode := int64(0o644)
			if info.Mode().Perm()&0o111 != 0 {
				mode = 0o755
			}
			out = append(out, entry{name: name, src: p, mode: mode, size: info.Size()})
		default:
			return fmt.Errorf("%s: only folders and regular files go in a release archive (%s)", p, info.Mode().Type())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// writeArchive packs dir into out, a .tar.gz or a .zip by its name. A
// failed write leaves no partial archive behind.
func writeArchive(out, dir string, mtime time.Time) (err error) {
	var pack func(io.Writer, []entry, time.Time) error
	switch {
	case strings.HasSuffix(out, ".tar.gz"):
		pack = writeTarGz
	case strings.HasSuffix(out, ".zip"):
		pack = writeZip
	default:
		return fmt.Errorf("%s: want a name ending in .tar.gz or .zip", out)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a folder", dir)
	}
	entries, err := collect(dir)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(out), ".pack-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := pack(f, entries, mtime); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), out)
}

func writeTarGz(w io.Writer, entries []entry, mtime time.Time) error {
	gz, err := gzip.NewWriterLevel(w, gzip.BestCompression) // no name, no time
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{
			Name:     e.name,
			Mode:     e.mode,
			ModTime:  mtime,
			Typeflag: tar.TypeDir,
			Format:   tar.FormatUSTAR, // no PAX records (atime, ctime) that could differ
		}
		if e.src != "" {
			h.Typeflag, h.Size = tar.TypeReg, e.size
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		if e.src != "" {
			if err := copyFile(tw, e); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func writeZip(w io.Writer, entries []entry, mtime time.Time) error {
	zw := zip.NewWriter(w)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(w, flate.BestCompression)
	})
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Modified: mtime, Method: zip.Deflate}
		if e.src == "" {
			h.Method = zip.Store
			h.SetMode(fs.ModeDir | 0o755)
		} else {
			h.SetMode(fs.FileMode(e.mode))
		}
		fw, err := zw.CreateHeader(h)
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		if e.src != "" {
			if err := copyFile(fw, e); err != nil {
				return err
			}
		}
	}
	return zw.Close()
}

// copyFile writes e's file, which must still be the size it was listed
// with: a header already promised that many bytes.
func copyFile(w io.Writer, e entry) error {
	f, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, f)
	if err != nil {
		return fmt.Errorf("%s: %w", e.src, err)
	}
	if n != e.size {
		return fmt.Errorf("%s changed while it was packed (%d bytes, was %d)", e.src, n, e.size)
	}
	return nil
}

// writeSums writes dir/SHA256SUMS in sha256sum's format (sha256sum -c
// checks it), one line a release file, sorted by name.
func writeSums(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, de := range des { // sorted by name
		n := de.Name()
		if !de.Type().IsRegular() || !(strings.HasSuffix(n, ".tar.gz") || strings.HasSuffix(n, ".zip") || strings.HasSuffix(n, ".deb")) {
			continue
		}
		sum, err := fileSum(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, n)
	}
	if b.Len() == 0 {
		return fmt.Errorf("%s holds no .tar.gz, .zip or .deb to sum", dir)
	}
	return os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(b.String()), 0o644)
}

func fileSum(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
