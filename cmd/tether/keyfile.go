package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/tether-io/tether/wire"
)

// Files that hold a key: a device's connection string (tether agent
// --device-file, tether devices add --out) and the CLI's config file
// (tether login). A key in a file that other local users can read is no
// better kept than one on a command line, which they see in ps: such a
// file is refused, not merely warned about, and the files tether writes
// are its owner's alone (0600) from the moment they exist.

// maxKeyFile bounds what is read of a key file: a connection string or
// a config file is a few hundred bytes, and a wrong path (a log, a
// device) must not be read whole.
const maxKeyFile = 64 << 10

// readKeyFile reads path, a file that holds a key. It refuses one that
// its group or other users can get at, with the file's mode and the fix.
func readKeyFile(path string) ([]byte, error) {
	data, perm, err := readSmallFile(path)
	if err != nil {
		return nil, err
	}
	if err := checkPrivate(path, perm); err != nil {
		return nil, err
	}
	return data, nil
}

// readSmallFile reads path and says its mode, from the file opened, so
// that a check of the mode is a check of what was read.
func readSmallFile(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err // fs.ErrNotExist stays in the chain
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if st.IsDir() {
		return nil, 0, fmt.Errorf("%s is a folder, not a file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, 0, err
	}
	if len(b) > maxKeyFile {
		return nil, 0, fmt.Errorf("%s is over %d KiB: not a connection string or a config file", path, maxKeyFile>>10)
	}
	return b, st.Mode().Perm(), nil
}

// checkPrivate refuses the mode perm of path, a file that holds a key,
// if anyone but its owner has any access to it. systemd's credentials
// folder is exempt: systemd lets the service's user alone read it, and
// may do so with an ACL, which shows in the group bits (0440) without
// giving the group anything.
func checkPrivate(path string, perm fs.FileMode) error {
	if runtime.GOOS == "windows" || perm&0o077 == 0 || inCredentialsDir(path) {
		return nil
	}
	var who []string
	if perm&0o070 != 0 {
		who = append(who, "its group")
	}
	if perm&0o007 != 0 {
		who = append(who, "every other user")
	}
	can := "can read it"
	if perm&0o044 == 0 {
		can = "can change it"
	}
	return fmt.Errorf("%s is mode %04o: %s %s, and it holds a key; only its owner may: chmod 600 %s",
		path, uint32(perm), strings.Join(who, " and "), can, path)
}

// inCredentialsDir says whether path is in the folder where systemd puts
// the service's credentials (LoadCredential=).
func inCredentialsDir(path string) bool {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return false
	}
	abs, err := filepath.Abs(path)
	return err == nil && filepath.Dir(abs) == filepath.Clean(dir)
}

// connStrFrom is the connection string in data, the contents of the file
// path: one line, blanks around it ignored. Its errors never quote the
// contents.
func connStrFrom(path string, data []byte) (string, error) {
	s := string(bytes.TrimSpace(data))
	switch {
	case s == "":
		return "", fmt.Errorf("%s is empty: want a connection string (HostName=...;...)", path)
	case strings.ContainsAny(s, "\r\n"):
		return "", fmt.Errorf("%s holds more than one line: want the connection string alone, as tether devices add --out writes it", path)
	}
	return s, nil
}

// keyFile is a file being written with a key in it, mode 0600. It is
// claimed before the key exists (a device is created only once its key
// has somewhere to go) and gets the key on commit.
type keyFile struct {
	path string
	f    *os.File
	tmp  string // with replace: the file beside path that becomes it
}

// errKeyFileExists is createKeyFile's answer for a path that exists
// when it may not replace it.
var errKeyFileExists = errors.New("exists")

// createKeyFile claims path for a key. Without replace, path must not
// exist: it is created at once, exclusively, so that nothing is ever
// overwritten, and the error for an existing one wraps
// errKeyFileExists. With replace, the key goes to a new file beside path
// that replaces it on commit, so that a failure leaves the old one whole.
func createKeyFile(path string, replace bool) (*keyFile, error) {
	if !replace {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%s %w", path, errKeyFileExists)
		}
		if err != nil {
			return nil, err
		}
		return &keyFile{path: path, f: f}, nil
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, fmt.Errorf("%s is a folder", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp") // mode 0600
	if err != nil {
		return nil, err
	}
	return &keyFile{path: path, f: f, tmp: f.Name()}, nil
}

// commit writes data and puts the file in place.
func (k *keyFile) commit(data []byte) error {
	_, err := k.f.Write(data)
	if err == nil {
		err = k.f.Sync()
	}
	if cerr := k.f.Close(); err == nil {
		err = cerr
	}
	if err == nil && k.tmp != "" {
		err = os.Rename(k.tmp, k.path)
	}
	if err != nil {
		k.remove()
	}
	return err
}

// abort gives up the file: nothing of it is left.
func (k *keyFile) abort() {
	k.f.Close()
	k.remove()
}

func (k *keyFile) remove() {
	if k.tmp != "" {
		os.Remove(k.tmp)
		return
	}
	os.Remove(k.path) // created by createKeyFile, exclusively: ours
}

// connStrOut is where devices add and rotate-key, and policies show, add
// and rotate-key, put a connection string: stdout, alone on it so that
// scripts can take it, or the --out file, claimed before the hub is asked
// so that a key is never made with nowhere to go.
type connStrOut struct {
	g    *globals
	kind string // "device" or "policy": whose key it is
	path string
	file *keyFile // nil for stdout, or once written
}

// newConnStrOut claims path for the connection string of a kind's ("" for
// stdout).
func newConnStrOut(g *globals, kind, path string, replace bool) (*connStrOut, error) {
	o := &connStrOut{g: g, kind: kind, path: path}
	if path == "" {
		return o, nil
	}
	f, err := createKeyFile(path, replace)
	switch {
	case errors.Is(err, errKeyFileExists):
		return nil, fmt.Errorf("--out: %w: tether never overwrites a file that may hold a key; pass --force to replace it, or choose another name", err)
	case err != nil:
		return nil, fmt.Errorf("--out: %w", err)
	}
	o.file = f
	return o, nil
}

// put writes the connection string cs of the device or policy name; made
// says the hub has just made its key (add, rotate-key), which a failed
// write must not leave unsaid.
func (o *connStrOut) put(name, cs string, made bool) error {
	if o.path == "" {
		fmt.Fprintln(o.g.Stdout, cs)
		if isCharDevice(o.g.Stdout) && holdsKey(cs) {
			fmt.Fprintf(o.g.Stderr, "tether: that is the %s's key, now in the terminal's scrollback: --out FILE writes it to a file only you can read\n", o.kind)
		}
		return nil
	}
	f := o.file
	o.file = nil
	if err := f.commit([]byte(cs + "\n")); err != nil {
		if made {
			return fmt.Errorf("%s %q has its key, but writing it to %s failed: %w; tether %ss rotate-key %s --out FILE makes another", o.kind, name, o.path, err, o.kind, name)
		}
		return fmt.Errorf("writing the connection string of %s %q to %s: %w", o.kind, name, o.path, err)
	}
	who := name
	if o.kind != "device" {
		who = o.kind + " " + name
	}
	fmt.Fprintf(o.g.Stderr, "tether: %s's connection string is in %s (mode 0600)\n", who, o.path)
	return nil
}

// close gives up a file that got no connection string: nothing is left.
func (o *connStrOut) close() {
	if o.file != nil {
		o.file.abort()
	}
}

// hideKeys takes a device's keys out of what is shown of it.
func hideKeys(d *wire.Device) {
	d.Authentication.SymmetricKey = nil
}
