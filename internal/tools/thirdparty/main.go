// Command thirdparty writes THIRD_PARTY.md: the software of others that
// Tether's binaries carry, each part with its licence, as a release must
// say. It lists the Go modules that tetherd and tether link on every
// platform a release builds for (scripts/release.sh), the Go standard
// library, and the npm packages of any front end they embed (each
// package-lock.json in the repository outside node_modules and testdata).
//
// A module's licence is read from its LICENSE or COPYING file in the
// module cache, an npm package's from the lock file; a licence it does not
// recognise, or one outside the list Tether accepts, stops it with an
// error naming the part: a new dependency's licence is a decision someone
// has to make, not a line the tool guesses.
//
//	go run ./internal/tools/thirdparty          # rewrite THIRD_PARTY.md
//	go run ./internal/tools/thirdparty -check   # fail if it is stale (.ci/run)
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// fileName is the list's name at the repository's root.
const fileName = "THIRD_PARTY.md"

func main() {
	check := flag.Bool("check", false, "write nothing; exit 1 if the file differs from what would be written")
	out := flag.String("o", "", "the `FILE` to write or check (default: "+fileName+" at the module's root)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "thirdparty: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	if err := run(*out, *check, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "thirdparty:", err)
		os.Exit(1)
	}
}

// run makes the list of the module the working directory is in and
// writes it to out, or with check compares it with out.
func run(out string, check bool, stderr io.Writer) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join(root, fileName)
	}
	want, err := generate(root)
	if err != nil {
		return err
	}
	if !check {
		return os.WriteFile(out, want, 0o644)
	}
	have, err := os.ReadFile(out)
	if err != nil {
		return fmt.Errorf("%w (go run ./internal/tools/thirdparty writes it)", err)
	}
	if bytes.Equal(have, want) {
		return nil
	}
	for _, l := range lineDiff(have, want) {
		fmt.Fprintln(stderr, l)
	}
	return fmt.Errorf("%s is stale: run go run ./internal/tools/thirdparty and commit it", out)
}

// generate makes THIRD_PARTY.md's content for the module at root.
func generate(root string) ([]byte, error) {
	mods, err := goModules(root)
	if err != nil {
		return nil, err
	}
	pkgs, err := npmPackages(root)
	if err != nil {
		return nil, err
	}
	return render(mods, pkgs), nil
}

// moduleRoot is the folder of the go.mod the working directory is in.
func moduleRoot() (string, error) {
	gomod, err := goCmd("", nil, "env", "GOMOD")
	if err != nil {
		return "", err
	}
	gomod = strings.TrimSpace(gomod)
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run it from Tether's repository")
	}
	return filepath.Dir(gomod), nil
}

// goCmd runs the go command in dir with env added and returns its output.
func goCmd(dir string, env []string, args ...string) (string, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out), nil
}

// lineDiff lists the lines only one of a and b has, "-" for a's and "+"
// for b's: which rows went stale.
func lineDiff(a, b []byte) []string {
	count := func(data []byte) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(string(data), "\n") {
			m[l]++
		}
		return m
	}
	ca, cb := count(a), count(b)
	var out []string
	for _, l := range strings.Split(string(a), "\n") {
		if cb[l] < ca[l] {
			out = append(out, "- "+l)
			ca[l]--
		}
	}
	for _, l := range strings.Split(string(b), "\n") {
		if ca[l] < cb[l] {
			out = append(out, "+ "+l)
			cb[l]--
		}
	}
	return out
}
