package main

import (
	"bytes"
	"fmt"
	"strings"
)

const header = `# Third-party software

Tether's binaries, tetherd and tether, carry the software below, each part
under its own licence, whose full text ships with it: a Go module's in its
LICENSE or COPYING file at the version listed (in the module cache, or at
https://pkg.go.dev/MODULE@VERSION?tab=licenses), a package kept in
Tether's tree ("in tree") in the LICENSE file of its folder, beside a
README.md that says what it changed, the Go standard library's in the Go
distribution, an npm package's in the package.

This file is generated: ` + "`go run ./internal/tools/thirdparty`" + ` writes it,
and ` + "`.ci/run`" + ` fails when it is stale. "Linked into" names the targets
when a module is linked on some of a binary's release targets only.

## Go modules

| Module | Version | Licence | Linked into |
| --- | --- | --- | --- |
`

// render writes the list in Markdown: the Go modules, then the npm
// packages, if any.
func render(mods []goModule, pkgs []npmPackage) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	for _, m := range mods {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", cell(m.path), cell(m.version), cell(m.license), cell(m.linkedInto()))
	}
	first := true
	for _, m := range mods {
		if m.notice == "" {
			continue
		}
		if first {
			b.WriteString("\n## Notices\n\nThe NOTICE files of the modules above that have one, as their licence asks.\n")
			first = false
		}
		fence := "```"
		for strings.Contains(m.notice, fence) {
			fence += "`"
		}
		fmt.Fprintf(&b, "\n### %s %s\n\n%s\n%s\n%s\n", m.path, m.version, fence, m.notice, fence)
	}
	if len(pkgs) > 0 {
		b.WriteString("\n## npm packages of embedded front ends\n\n")
		b.WriteString("| Package | Version | Licence | Lock file |\n| --- | --- | --- | --- |\n")
		for _, p := range pkgs {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", cell(p.name), cell(p.version), cell(p.license), cell(p.lockFile))
		}
	}
	return b.Bytes()
}

// cell is s as a table cell: a | would end it.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}
