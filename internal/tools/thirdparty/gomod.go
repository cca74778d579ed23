package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// target is a platform a release builds for, and the binaries it builds
// there, as scripts/release.sh does: CGO off, the hub and the agent on
// Linux and macOS, only the CLI on Windows. GOARM and GOMIPS change no
// file a build selects, so linux/arm and linux/mips stand for every
// variant of theirs.
type target struct {
	goos, goarch string
	binaries     []string // under ./cmd
}

var targets = []target{
	{"linux", "amd64", []string{"tetherd", "tether"}},
	{"linux", "arm64", []string{"tetherd", "tether"}},
	{"linux", "arm", []string{"tetherd", "tether"}},
	{"linux", "mips", []string{"tetherd", "tether"}},
	{"linux", "mipsle", []string{"tetherd", "tether"}},
	{"linux", "riscv64", []string{"tetherd", "tether"}},
	{"darwin", "arm64", []string{"tetherd", "tether"}},
	{"windows", "amd64", []string{"tether"}},
}

// binaries are the programs of the list's "Linked into" column, in its
// order.
var binaries = []string{"tetherd", "tether"}

// goModule is a module that a binary links, and where.
type goModule struct {
	path, version string
	license       string
	// notice is the text of the module's NOTICE file, if it has one: the
	// Apache License asks that a distribution carry it.
	notice string
	// on maps each binary to the targets it links the module on.
	on map[string][]string
}

// listedPackage is what go list -json says of a package.
type listedPackage struct {
	ImportPath string
	Dir        string
	DepOnly    bool
	Standard   bool
	Deps       []string
	Module     *listedModule
}

type listedModule struct {
	Path    string
	Version string
	Dir     string
	Main    bool
	Replace *listedModule
}

// goModules lists the modules the binaries link on each target, with
// their licences, sorted by path, the standard library first. A folder of
// Tether's own tree that holds a licence file of its own (a copy of
// another project's package, changed, as internal/yamux) is listed as a
// part of its own beside them.
func goModules(root string) ([]goModule, error) {
	goroot, err := goCmd(root, nil, "env", "GOROOT")
	if err != nil {
		return nil, err
	}
	std := goModule{path: "Go standard library and runtime", on: map[string][]string{}}
	if std.license, err = licenseOf(filepath.Join(strings.TrimSpace(goroot), "LICENSE")); err != nil {
		return nil, fmt.Errorf("the Go standard library: %w", err)
	}
	byPath := map[string]*goModule{}
	inTree := map[string]*goModule{} // by package; nil: Tether's own code
	for _, tg := range targets {
		platform := tg.goos + "/" + tg.goarch
		var pkgs []string
		for _, b := range tg.binaries {
			pkgs = append(pkgs, "./cmd/"+b)
		}
		args := append([]string{"list", "-deps", "-json=ImportPath,Dir,DepOnly,Standard,Deps,Module"}, pkgs...)
		out, err := goCmd(root, []string{"GOOS=" + tg.goos, "GOARCH=" + tg.goarch, "CGO_ENABLED=0"}, args...)
		if err != nil {
			return nil, err
		}
		listed, err := decodePackages(out)
		if err != nil {
			return nil, fmt.Errorf("go list for %s: %w", platform, err)
		}
		mods := map[string]*listedModule{} // by package
		for _, p := range listed {
			switch {
			case p.Module != nil && !p.Module.Main:
				mods[p.ImportPath] = p.Module
			case p.Module != nil:
				if _, seen := inTree[p.ImportPath]; !seen {
					if inTree[p.ImportPath], err = newInTree(root, p); err != nil {
						return nil, err
					}
				}
			}
		}
		for _, p := range listed {
			if p.DepOnly {
				continue
			}
			bin := filepath.Base(p.ImportPath)
			std.on[bin] = appendOnce(std.on[bin], platform)
			for _, dep := range p.Deps {
				if gm := inTree[dep]; gm != nil {
					gm.on[bin] = appendOnce(gm.on[bin], platform)
					continue
				}
				m := mods[dep]
				if m == nil {
					continue // the standard library, or Tether's own
				}
				gm := byPath[m.Path]
				if gm == nil {
					if gm, err = newGoModule(m); err != nil {
						return nil, err
					}
					byPath[m.Path] = gm
				}
				gm.on[bin] = appendOnce(gm.on[bin], platform)
			}
		}
	}
	for p, gm := range inTree {
		if gm != nil {
			byPath[p] = gm
		}
	}
	out := []goModule{std}
	for _, p := range slices.Sorted(maps.Keys(byPath)) {
		out = append(out, *byPath[p])
	}
	return out, nil
}

// upstreamMark begins the line of an in-tree folder's README.md that names
// what the folder's code was copied from: "Upstream: MODULE VERSION".
const upstreamMark = "Upstream: "

// newInTree is the part that package p of Tether's own module is when its
// folder (not the module's root) holds a licence file: someone else's
// code, kept in the tree under its own licence. Its README.md names where
// it came from. Any other package is Tether's own: nil.
func newInTree(root string, p listedPackage) (*goModule, error) {
	if p.Dir == "" || filepath.Clean(p.Dir) == filepath.Clean(root) {
		return nil, nil
	}
	files, err := filesNamed(p.Dir, "license", "licence", "copying")
	if err != nil || len(files) == 0 {
		return nil, err
	}
	text, err := readAll(files)
	if err != nil {
		return nil, err
	}
	license, err := classify(text)
	if err != nil {
		return nil, fmt.Errorf("package %s (%s): %w", p.ImportPath, strings.Join(files, ", "), err)
	}
	readme, err := os.ReadFile(filepath.Join(p.Dir, "README.md"))
	if err != nil {
		return nil, fmt.Errorf("package %s holds a licence of its own, so its README.md must say where its code came from (a line %q): %w", p.ImportPath, upstreamMark+"MODULE VERSION", err)
	}
	var upstream string
	for l := range strings.SplitSeq(string(readme), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), upstreamMark); ok {
			upstream = strings.TrimSpace(rest)
			break
		}
	}
	if upstream == "" {
		return nil, fmt.Errorf("package %s holds a licence of its own, so its README.md must say where its code came from: no line %q", p.ImportPath, upstreamMark+"MODULE VERSION")
	}
	notices, err := filesNamed(p.Dir, "notice")
	if err != nil {
		return nil, err
	}
	notice, err := readAll(notices)
	if err != nil {
		return nil, err
	}
	return &goModule{path: p.ImportPath, version: "in tree, from " + upstream, license: license, notice: strings.TrimSpace(notice), on: map[string][]string{}}, nil
}

// decodePackages reads go list -json's stream of objects.
func decodePackages(out string) ([]listedPackage, error) {
	dec := json.NewDecoder(strings.NewReader(out))
	var pkgs []listedPackage
	for {
		var p listedPackage
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			return pkgs, nil
		}
		if err != nil {
			return nil, err
		}
		pkgs = append(pkgs, p)
	}
}

// newGoModule reads the licence of m (its replacement's, if replaced).
func newGoModule(m *listedModule) (*goModule, error) {
	src := m
	version := m.Version
	if m.Replace != nil {
		src = m.Replace
		version = m.Replace.Path + " " + m.Replace.Version
		if m.Replace.Version == "" {
			version = m.Replace.Path // a folder
		}
	}
	if src.Dir == "" {
		return nil, fmt.Errorf("module %s %s is not in the module cache (go mod download)", m.Path, m.Version)
	}
	files, err := filesNamed(src.Dir, "license", "licence", "copying")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("module %s %s has no LICENSE or COPYING file in %s: find its licence and decide", m.Path, m.Version, src.Dir)
	}
	text, err := readAll(files)
	if err != nil {
		return nil, err
	}
	license, err := classify(text)
	if err != nil {
		return nil, fmt.Errorf("module %s %s (%s): %w", m.Path, m.Version, strings.Join(files, ", "), err)
	}
	notices, err := filesNamed(src.Dir, "notice")
	if err != nil {
		return nil, err
	}
	notice, err := readAll(notices)
	if err != nil {
		return nil, err
	}
	return &goModule{path: m.Path, version: version, license: license, notice: strings.TrimSpace(notice), on: map[string][]string{}}, nil
}

// filesNamed are the files at the top of dir whose names begin with one
// of prefixes, in any case ("license": LICENSE, License.md,
// LICENSE-APACHE), sorted.
func filesNamed(dir string, prefixes ...string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := strings.ToLower(e.Name())
		if e.Type().IsRegular() && slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// readAll is the files' texts, one after the other.
func readAll(files []string) (string, error) {
	var text strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		text.Write(b)
		text.WriteByte('\n')
	}
	return text.String(), nil
}

// licenseOf classifies the licence file at path.
func licenseOf(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	license, err := classify(string(b))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return license, nil
}

// linkedInto is the module's "Linked into" cell: each binary that links
// it, followed by the targets where it does when not all of that
// binary's.
func (m goModule) linkedInto() string {
	var parts []string
	for _, b := range binaries {
		on := m.on[b]
		if len(on) == 0 {
			continue
		}
		all := 0
		for _, tg := range targets {
			if slices.Contains(tg.binaries, b) {
				all++
			}
		}
		if len(on) < all {
			parts = append(parts, b+" ("+strings.Join(on, ", ")+")")
		} else {
			parts = append(parts, b)
		}
	}
	return strings.Join(parts, ", ")
}

func appendOnce(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}
