// Command consolevendor copies the files the web console takes from npm
// (xterm.js and its fit addon, as hub/console/vendor-src's lock file pins
// them) from that folder's node_modules into hub/console/assets/vendor,
// which the hub embeds: the hub is built with Go alone, and what it
// serves is what the lock file names. go generate ./hub/console runs it
// after npm ci in vendor-src; .ci/run checks that running it again
// changes nothing.
//
// The only change to a file is the removal of its sourceMappingURL line:
// the console does not serve the maps, and a browser's developer tools
// would ask for them.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
)

// vendored is what is copied: a file of a package in node_modules and its
// name in the vendor folder.
var vendored = []struct{ pkg, file, to string }{
	{"@xterm/xterm", "lib/xterm.mjs", "xterm.mjs"},
	{"@xterm/xterm", "css/xterm.css", "xterm.css"},
	{"@xterm/xterm", "LICENSE", "xterm.LICENSE"},
	{"@xterm/addon-fit", "lib/addon-fit.mjs", "addon-fit.mjs"},
	{"@xterm/addon-fit", "LICENSE", "addon-fit.LICENSE"},
}

var sourceMap = regexp.MustCompile(`(?m)^//# sourceMappingURL=\S+\s*$`)

func main() {
	src := flag.String("src", "vendor-src", "the npm package folder, npm ci done")
	dst := flag.String("dst", "assets/vendor", "the folder the console embeds")
	flag.Parse()
	if err := run(*src, *dst); err != nil {
		fmt.Fprintln(os.Stderr, "consolevendor:", err)
		os.Exit(1)
	}
}

func run(src, dst string) error {
	lock, err := readLock(filepath.Join(src, "package-lock.json"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	var want []string
	for _, v := range vendored {
		dir := filepath.Join(src, "node_modules", filepath.FromSlash(v.pkg))
		version, err := installedVersion(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s is not installed: run npm ci in %s first", v.pkg, src)
		}
		if err != nil {
			return err
		}
		if locked := lock["node_modules/"+v.pkg]; version != locked {
			return fmt.Errorf("%s %s is installed, the lock file pins %q: run npm ci in %s", v.pkg, version, locked, src)
		}
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(v.file)))
		if err != nil {
			return err
		}
		b = sourceMap.ReplaceAll(b, nil)
		b = append(bytes.TrimRight(b, "\n"), '\n')
		if err := os.WriteFile(filepath.Join(dst, v.to), b, 0o644); err != nil {
			return err
		}
		want = append(want, v.to)
	}
	// A file no longer vendored goes, so that the folder is what the list
	// says.
	entries, err := os.ReadDir(dst)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !slices.Contains(want, e.Name()) {
			if err := os.Remove(filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// readLock returns the version a package-lock.json pins for each package.
func readLock(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make(map[string]string, len(lock.Packages))
	for k, p := range lock.Packages {
		out[k] = p.Version
	}
	return out, nil
}

// installedVersion is the version of the package installed in dir.
func installedVersion(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return "", err
	}
	var p struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	return p.Version, nil
}
