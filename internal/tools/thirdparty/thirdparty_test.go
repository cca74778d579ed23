package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Sentences of the licences' texts, as their files word-wrap them.
const (
	mitText = `Copyright (c) 2013 TOML authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal`
	bsdHead = `Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are
met:`
	bsd3Clause = `   * Neither the name of Google Inc. nor the names of its
contributors may be used to endorse or promote products derived from
this software without specific prior written permission.`
	apacheText = `
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/`
	iscText = `Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above`
	mplText = `Mozilla Public License Version 2.0
==================================`
	gplText = `                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007`
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string
	}{
		{"MIT", mitText, "MIT"},
		{"BSD-3-Clause", bsdHead + "\n" + bsd3Clause, "BSD-3-Clause"},
		{"BSD-2-Clause", bsdHead, "BSD-2-Clause"},
		{"Apache-2.0", apacheText, "Apache-2.0"},
		{"ISC", iscText, "ISC"},
		{"MPL-2.0", mplText, "MPL-2.0"},
		// klauspost/compress: its own BSD licence, then the texts of the
		// code it took in.
		{"several texts", bsdHead + bsd3Clause + apacheText + mitText, "Apache-2.0 AND BSD-3-Clause AND MIT"},
		{"in capitals", strings.ToUpper(mitText), "MIT"},
	} {
		got, err := classify(tc.text)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	for _, text := range []string{gplText, "", "All rights reserved."} {
		if got, err := classify(text); err == nil {
			t.Errorf("classify(%.40q) = %q, want an error", text, got)
		}
	}
}

// Tether's own LICENSE is the Apache License 2.0.
func TestClassifyRealFiles(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := licenseOf(filepath.Join(root, "LICENSE")); err != nil || got != "Apache-2.0" {
		t.Errorf("Tether's LICENSE: %q, %v", got, err)
	}
}

func TestParseLock(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := parseLock(data, "console/package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range pkgs {
		got = append(got, fmt.Sprintf("%s %s %s %s", p.name, p.version, p.license, p.lockFile))
	}
	// Not the project, its workspace or the link to it, not the packages
	// for development only (GPL's among them), each package once.
	want := []string{
		"@lit/reactive-element 2.1.0 BSD-3-Clause console/package-lock.json",
		"dual 1.0.0 (MIT OR Apache-2.0) console/package-lock.json",
		"preact 10.26.4 MIT console/package-lock.json",
		"tslib 2.8.1 0BSD console/package-lock.json",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	for _, tc := range []struct{ name, lock, want string }{
		{"not JSON", `{"lockfileVersion": 3,`, "x/package-lock.json: unexpected end"},
		{"version 1", `{"lockfileVersion": 1, "dependencies": {"a": {"version": "1.0.0"}}}`, "lockfileVersion 1 records no licences"},
		{"no licence", `{"lockfileVersion": 3, "packages": {"node_modules/a": {"version": "1.0.0"}}}`, "a 1.0.0: no licence recorded"},
		{"a licence not accepted", `{"lockfileVersion": 3, "packages": {"node_modules/a": {"version": "1.0.0", "license": "MIT OR GPL-3.0-only"}}}`,
			"licence GPL-3.0-only in MIT OR GPL-3.0-only is not one Tether accepts"},
		{"a licence object", `{"lockfileVersion": 2, "packages": {"node_modules/a": {"version": "1.0.0", "license": {"type": "MIT"}}}}`, "not an SPDX expression"},
		{"no version", `{"lockfileVersion": 3, "packages": {"node_modules/a": {"license": "MIT"}}}`, `package "node_modules/a" has no name or version`},
	} {
		if _, err := parseLock([]byte(tc.lock), "x/package-lock.json"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

// TestNpmPackages: the lock files of a front end are read wherever they
// are, but not those in node_modules, testdata or hidden folders; none is
// none, not an error.
func TestNpmPackages(t *testing.T) {
	root := t.TempDir()
	if pkgs, err := npmPackages(root); err != nil || len(pkgs) != 0 {
		t.Fatalf("no lock file: %v, %v", pkgs, err)
	}
	good := `{"lockfileVersion": 3, "packages": {"": {"name": "ui"}, "node_modules/preact": {"version": "10.26.4", "license": "MIT"}}}`
	for path, data := range map[string]string{
		"hub/ui/package-lock.json":                      good,
		"hub/ui/node_modules/x/package-lock.json":       "not read",
		"e2e/testdata/console/package-lock.json":        "not read",
		".cache/package-lock.json":                      "not read",
		"hub/ui/package.json":                           "not read",
		"hub/ui/node_modules/.package-lock.json":        "not read",
		"docs/package-lock.json.orig":                   "not read",
		"hub/other/node_modules/preact/package.json":    "not read",
		"internal/tools/thirdparty/testdata/lock.json":  "not read",
		"hub/ui/src/package-lock.json/not-a-file/x.txt": "",
	} {
		full := filepath.Join(root, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pkgs, err := npmPackages(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 1 || pkgs[0] != (npmPackage{name: "preact", version: "10.26.4", license: "MIT", lockFile: "hub/ui/package-lock.json"}) {
		t.Errorf("got %+v", pkgs)
	}

	if err := os.WriteFile(filepath.Join(root, "hub", "ui", "package-lock.json"), []byte(`{"lockfileVersion": 3, "packages": {"node_modules/a": {"version": "1.0.0", "license": "SSPL-1.0"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := npmPackages(root); err == nil || !strings.Contains(err.Error(), "hub/ui/package-lock.json: a 1.0.0: licence SSPL-1.0") {
		t.Errorf("a lock file with a licence not accepted: %v", err)
	}
}

func TestRender(t *testing.T) {
	mods := []goModule{
		{path: "example.com/a", version: "v1.0.0", license: "MIT", on: map[string][]string{"tetherd": {"linux/amd64"}, "tether": allOf("tether")}},
		{path: "example.com/b", version: "v2.0.0", license: "Apache-2.0", notice: "B\nCopyright ```2026```", on: map[string][]string{"tetherd": allOf("tetherd")}},
	}
	pkgs := []npmPackage{{name: "preact", version: "10.26.4", license: "(MIT OR Apache-2.0)", lockFile: "hub/ui/package-lock.json"}}
	got := string(render(mods, pkgs))
	for _, want := range []string{
		"| example.com/a | v1.0.0 | MIT | tetherd (linux/amd64), tether |\n",
		"| example.com/b | v2.0.0 | Apache-2.0 | tetherd |\n",
		"### example.com/b v2.0.0\n\n````\nB\nCopyright ```2026```\n````\n",
		"| preact | 10.26.4 | (MIT OR Apache-2.0) | hub/ui/package-lock.json |\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "### example.com/a") {
		t.Error("a module without a NOTICE file has a notice")
	}
}

// allOf is every target of binary b.
func allOf(b string) []string {
	var out []string
	for _, tg := range targets {
		if slices.Contains(tg.binaries, b) {
			out = append(out, tg.goos+"/"+tg.goarch)
		}
	}
	return out
}

// TestCheck runs the tool as CI does: -check exits 0 on a file that is
// current and 1 on one that lacks a module or lists one too many, saying
// which lines differ and how to bring it up to date; without -check it
// writes the file.
func TestCheck(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	current, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	// Tether's binaries link NATS's server, the CLI a TOML parser, and
	// both the copy of yamux kept in the tree.
	for _, want := range []string{"| github.com/nats-io/nats-server/v2 | ", "| github.com/BurntSushi/toml | v", "| Go standard library and runtime | - | BSD-3-Clause | tetherd, tether |",
		"| github.com/tether-io/tether/internal/yamux | in tree, from github.com/hashicorp/yamux v0.1.2 | MPL-2.0 | tetherd, tether |"} {
		if !bytes.Contains(current, []byte(want)) {
			t.Errorf("the list has no %q:\n%s", want, current)
		}
	}

	dir := t.TempDir()
	tool := filepath.Join(dir, "thirdparty")
	if out, err := exec.Command("go", "build", "-o", tool, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	runTool := func(args ...string) (stderr string, code int) {
		t.Helper()
		cmd := exec.Command(tool, args...)
		cmd.Dir = root
		var e bytes.Buffer
		cmd.Stderr = &e
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			return e.String(), exit.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		return e.String(), 0
	}

	written := filepath.Join(dir, "written.md")
	if stderr, code := runTool("-o", written); code != 0 {
		t.Fatalf("writing: exit %d\n%s", code, stderr)
	}
	if got, _ := os.ReadFile(written); !bytes.Equal(got, current) {
		t.Fatalf("the tool wrote\n%s\nwant\n%s", got, current)
	}
	if stderr, code := runTool("-check", "-o", written); code != 0 {
		t.Errorf("-check of a current file: exit %d\n%s", code, stderr)
	}

	var kept []string
	var dropped string
	for _, l := range strings.SplitAfter(string(current), "\n") {
		if dropped == "" && strings.HasPrefix(l, "| github.com/BurntSushi/toml |") {
			dropped = l
			continue
		}
		kept = append(kept, l)
	}
	stale := filepath.Join(dir, "stale.md")
	extra := "| github.com/removed/long-ago | v0.1.0 | MIT | tether |\n"
	if err := os.WriteFile(stale, []byte(strings.Join(kept, "")+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr, code := runTool("-check", "-o", stale)
	if code != 1 {
		t.Errorf("-check of a stale file: exit %d, want 1\n%s", code, stderr)
	}
	for _, want := range []string{"+ " + strings.TrimSuffix(dropped, "\n"), "- " + strings.TrimSuffix(extra, "\n"), "is stale: run go run ./internal/tools/thirdparty"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("-check of a stale file does not say %q:\n%s", want, stderr)
		}
	}
	if _, code := runTool("-check", "-o", filepath.Join(dir, "missing.md")); code != 1 {
		t.Errorf("-check of a missing file: exit %d, want 1", code)
	}
	if _, code := runTool("extra"); code != 2 {
		t.Errorf("an argument: exit %d, want 2", code)
	}
}

// TestInTree: a folder of Tether's tree with a licence file of its own is
// a part of its own, named after the upstream its README.md gives; one
// without a licence file is Tether's own code; a licence file without the
// README line, or one not recognised, is an error naming the package.
func TestInTree(t *testing.T) {
	root := t.TempDir()
	folder := func(files map[string]string) listedPackage {
		t.Helper()
		dir, err := os.MkdirTemp(root, "pkg")
		if err != nil {
			t.Fatal(err)
		}
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return listedPackage{ImportPath: "example.com/tether/internal/" + filepath.Base(dir), Dir: dir}
	}

	if gm, err := newInTree(root, listedPackage{ImportPath: "example.com/tether", Dir: root}); gm != nil || err != nil {
		t.Errorf("the module's root: %+v, %v; want nothing", gm, err)
	}
	if gm, err := newInTree(root, folder(map[string]string{"README.md": "Upstream: example.com/x v1.0.0\n"})); gm != nil || err != nil {
		t.Errorf("a folder without a licence file: %+v, %v; want nothing", gm, err)
	}

	p := folder(map[string]string{"LICENSE": mplText, "README.md": "# x\n\nUpstream: example.com/x v1.2.3\n\nChanged.\n"})
	gm, err := newInTree(root, p)
	if err != nil {
		t.Fatal(err)
	}
	if gm.path != p.ImportPath || gm.version != "in tree, from example.com/x v1.2.3" || gm.license != "MPL-2.0" {
		t.Errorf("got %s | %s | %s", gm.path, gm.version, gm.license)
	}

	for name, files := range map[string]map[string]string{
		"no README.md":        {"LICENSE": mplText},
		"no Upstream line":    {"LICENSE": mplText, "README.md": "# x\n"},
		"an unknown licence":  {"LICENSE": "All rights reserved.", "README.md": "Upstream: example.com/x v1\n"},
		"a licence not taken": {"COPYING": gplText, "README.md": "Upstream: example.com/x v1\n"},
	} {
		p := folder(files)
		if _, err := newInTree(root, p); err == nil || !strings.Contains(err.Error(), p.ImportPath) {
			t.Errorf("%s: %v, want an error naming %s", name, err, p.ImportPath)
		}
	}
}
