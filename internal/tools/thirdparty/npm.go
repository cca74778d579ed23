package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// npmPackage is a package that a front end's lock file installs for its
// build (not only for its development).
type npmPackage struct {
	name, version, license string
	lockFile               string // relative to the repository's root, with /
}

// npmPackages reads every package-lock.json under root, except those in
// node_modules (packages' own), testdata (tests' fixtures, which no binary
// embeds) and hidden folders. None is found when Tether embeds no front
// end built with npm.
func npmPackages(root string) ([]npmPackage, error) {
	var out []npmPackage
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "node_modules" || name == "testdata" || strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if name != "package-lock.json" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		pkgs, err := parseLock(data, filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		out = append(out, pkgs...)
		return nil
	})
	return out, err
}

// lockFile is what parseLock reads of a package-lock.json.
type lockFile struct {
	LockfileVersion int                    `json:"lockfileVersion"`
	Packages        map[string]lockPackage `json:"packages"`
}

type lockPackage struct {
	Version string          `json:"version"`
	License json.RawMessage `json:"license"`
	Dev     bool            `json:"dev"`
	Link    bool            `json:"link"`
}

// parseLock lists the packages a lock file (npm's lockfileVersion 2 or 3)
// installs for a build, sorted, each once: not those only for development
// (dev), not links to the project's own folders, not the project itself.
// file names the lock file in errors and in the list.
func parseLock(data []byte, file string) ([]npmPackage, error) {
	var lock lockFile
	if err := json.Unmarshal(data, &lock); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if lock.LockfileVersion < 2 || lock.Packages == nil {
		return nil, fmt.Errorf("%s: lockfileVersion %d records no licences: npm install --lockfile-version 3 rewrites it", file, lock.LockfileVersion)
	}
	seen := map[string]bool{}
	var out []npmPackage
	for key, p := range lock.Packages {
		// "node_modules/a", "node_modules/@s/b", "node_modules/a/node_modules/c";
		// "" is the project, other keys its workspaces.
		i := strings.LastIndex(key, "node_modules/")
		if i < 0 || p.Dev || p.Link {
			continue
		}
		name := key[i+len("node_modules/"):]
		if name == "" || p.Version == "" {
			return nil, fmt.Errorf("%s: package %q has no name or version", file, key)
		}
		var license string
		if len(p.License) > 0 && json.Unmarshal(p.License, &license) != nil {
			return nil, fmt.Errorf("%s: %s %s: a licence that is not an SPDX expression: %s", file, name, p.Version, p.License)
		}
		if err := checkExpression(license); err != nil {
			return nil, fmt.Errorf("%s: %s %s: %w", file, name, p.Version, err)
		}
		id := name + "@" + p.Version
		if seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, npmPackage{name: name, version: p.Version, license: license, lockFile: file})
	}
	slices.SortFunc(out, func(a, b npmPackage) int {
		return strings.Compare(a.name+"@"+a.version, b.name+"@"+b.version)
	})
	return out, nil
}
