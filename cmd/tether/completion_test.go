package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// needShell is the path of a shell; a missing one skips the test, or
// fails it under TETHER_E2E_REQUIRE=1 (CI), where a skip would hide that
// the test never ran.
func needShell(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := name + " is not installed, so its completion script is not tried (.ci/run installs it)"
		if os.Getenv("TETHER_E2E_REQUIRE") == "1" {
			t.Fatal(msg + "; TETHER_E2E_REQUIRE=1 forbids skipping")
		}
		t.Skip(msg)
	}
	return p
}

// compCase is a command line typed up to the cursor and what completion
// should offer there.
type compCase struct {
	line string
	want []string
}

// completionCases are drawn from the command and flag tables: after each
// command path, its words (commands, subcommands, choices) and, after
// "--", its flags; plus the awkward places: values to skip, values of
// flags that take one, file names.
func completionCases(t *testing.T, dir string) (cases []compCase, file compCase) {
	t.Helper()
	for _, p := range completionTable() {
		prefix := "tether " + p.path + " "
		if p.path == "" {
			prefix = "tether "
		}
		if p.path == "forward" || p.path == "pipe" {
			prefix += "dev1 ssh " // its arguments come before the flags here
		}
		var flags []string
		for _, f := range p.flags {
			flags = append(flags, "--"+f.name)
		}
		cases = append(cases, compCase{prefix + "--", flags})
		if len(p.words) > 0 {
			cases = append(cases, compCase{prefix, p.words})
		}
	}
	devices := findCommand("devices").subs
	cases = append(cases,
		compCase{"tether --hub HostName=h.example:8443 --ca ca.pem devices ", devices},
		compCase{"tether --hub=HostName=h.example --ca=ca.pem devices ", devices},
		compCase{"tether -ca ca.pem devices ", devices},
		compCase{"tether forward dev1 ssh --listen ", nil},
		compCase{"tether agent --device ", nil},
	)
	if err := os.WriteFile(filepath.Join(dir, "agent.toml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	file = compCase{"tether agent --config " + dir + "/ag", []string{dir + "/agent.toml"}}
	return cases, file
}

// completionScript is what tether completion SHELL prints, in a file.
func completionScript(t *testing.T, shell string) string {
	t.Helper()
	t.Setenv("TETHER_HUB", "")
	t.Setenv("TETHER_CA", "")
	stdout, stderr, err := runCLI(context.Background(), "completion", shell)
	if err != nil || stderr != "" || stdout == "" {
		t.Fatalf("completion %s: %v, stderr %q", shell, err, stderr)
	}
	path := filepath.Join(t.TempDir(), "tether."+shell)
	if err := os.WriteFile(path, []byte(stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runShell runs script in the shell and returns its output, one line per
// case.
func runShell(t *testing.T, shell string, args ...string) []string {
	t.Helper()
	cmd := exec.Command(shell, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", shell, args, err, out)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
}

// tryScript runs driver in the shell (with args before -c), then one
// "t 'LINE'" for each case: driver defines t to print the words
// completing LINE offers, on one line. It checks each case's words, in any
// order, and the line the driver prints first when registered is not "".
func tryScript(t *testing.T, shell string, args []string, driver string, cases []compCase, registered string) {
	t.Helper()
	var b strings.Builder
	b.WriteString(driver)
	for _, tc := range cases {
		b.WriteString("t " + shellQuote(tc.line) + "\n")
	}
	got := runShell(t, shell, append(args, "-c", b.String())...)
	if registered != "" {
		if got[0] != registered {
			t.Errorf("the script registers with %q, want %q", got[0], registered)
		}
		got = got[1:]
	}
	if len(got) != len(cases) {
		t.Fatalf("%d lines of output for %d cases:\n%s", len(got), len(cases), strings.Join(got, "\n"))
	}
	for i, tc := range cases {
		g := strings.Fields(got[i])
		slices.Sort(g)
		w := slices.Clone(tc.want)
		slices.Sort(w)
		if !slices.Equal(g, w) {
			t.Errorf("%q: offered %q, want %q", tc.line, g, w)
		}
	}
}

// TestBashCompletion runs the script in bash as bash runs it on TAB:
// COMP_LINE and COMP_POINT set, _tether called, COMPREPLY read.
func TestBashCompletion(t *testing.T) {
	bash := needShell(t, "bash")
	script := completionScript(t, "bash")
	cases, file := completionCases(t, t.TempDir())
	driver := "source " + shellQuote(script) + "\ncomplete -p tether\n" +
		"t() { COMP_LINE=$1; COMP_POINT=${#1}; COMPREPLY=(); _tether; echo \"${COMPREPLY[*]}\"; }\n"
	tryScript(t, bash, []string{"--norc", "--noprofile"}, driver, append(cases, file), "complete -F _tether tether")
}

// TestZshCompletion checks the script's syntax with zsh -n, then runs it
// in zsh with compadd, _files and compdef standing in for the completion
// system's (they print what they are given): zsh's own compadd filters by
// the word typed so far, so each case ends where a word begins.
func TestZshCompletion(t *testing.T) {
	zsh := needShell(t, "zsh")
	script := completionScript(t, "zsh")
	runShell(t, zsh, "-n", script)
	cases, file := completionCases(t, t.TempDir())
	file.want = []string{"FILES"}
	file.line = "tether agent --config "
	cases = append(cases, file)
	for _, tc := range cases {
		if !strings.HasSuffix(tc.line, " ") && !strings.HasSuffix(tc.line, "--") {
			t.Fatalf("case %q does not end where a word begins", tc.line)
		}
	}
	driver := `compdef() { print -r -- "compdef $*" }
compadd() { [[ $1 == -- ]] && shift; print -r -- "$*" }
_files() { print -r -- FILES }
source ` + shellQuote(script) + `
t() {
	words=(${(s: :)1})
	[[ $1 == *' ' ]] && words+=('')
	CURRENT=${#words}
	local out
	out=$(_tether)
	print -r -- "$out"
}
`
	tryScript(t, zsh, []string{"-f"}, driver, cases, "compdef _tether tether")
}

// TestFishCompletion checks the script's syntax with fish -n, then asks
// fish itself what it completes (complete -C).
func TestFishCompletion(t *testing.T) {
	fish := needShell(t, "fish")
	script := completionScript(t, "fish")
	runShell(t, fish, "--no-config", "-n", script)
	cases, file := completionCases(t, t.TempDir())
	driver := "source " + shellQuote(script) + "\n" +
		"function t; echo (complete -C$argv[1] | string replace -r '\\t.*' '' | string join ' '); end\n"
	tryScript(t, fish, []string{"--no-config"}, driver, append(cases, file), "")
}

// TestCompletionTable: every command and subcommand parses its flags
// where completion can see them, and no flag takes a value in one
// command and none in another (the scripts skip a flag's value by name).
func TestCompletionTable(t *testing.T) {
	valued := map[string]bool{}
	for _, p := range completionTable() {
		for _, f := range p.flags {
			if v, seen := valued[f.name]; seen && v != takesValue(f) {
				t.Errorf("--%s takes a value in one command and not in another", f.name)
			}
			valued[f.name] = takesValue(f)
		}
	}
	for _, path := range commandPaths() {
		sub := ""
		if len(path) > 1 {
			sub = path[1]
		}
		if commandFlags(findCommand(path[0]), sub) == nil {
			t.Errorf("%q does not parse its flags with globals.parse", path)
		}
	}
	if _, _, err := runCLI(context.Background(), "completion", "tcsh"); err == nil || !strings.Contains(err.Error(), "bash, zsh, fish") {
		t.Errorf("completion tcsh: %v", err)
	}
}

// shellQuote quotes s for bash, zsh and fish alike, in single quotes.
func shellQuote(s string) string {
	if strings.Contains(s, "'") {
		panic("shellQuote: a quote in " + s)
	}
	return "'" + s + "'"
}
