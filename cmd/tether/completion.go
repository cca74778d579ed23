package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/tether-io/tether/internal/cliflag"
)

// completionShells are the shells tether completion writes a script for.
var completionShells = []string{"bash", "zsh", "fish"}

const completionUsage = `usage: tether completion bash|zsh|fish

Prints a script that completes tether's commands, subcommands and flags,
and file names after the flags that take a file. To use it:

  bash  echo 'source <(tether completion bash)' >> ~/.bashrc
  zsh   echo 'source <(tether completion zsh)' >> ~/.zshrc   (after compinit)
  fish  tether completion fish > ~/.config/fish/completions/tether.fish

The script is made from the commands and flags of this tether: make it
again after an upgrade.
`

func cmdCompletion(ctx context.Context, g *globals, args []string) error {
	fs := g.newFlagSet("completion", completionUsage)
	pos, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("completion needs one shell: %s", strings.Join(completionShells, ", "))
	}
	table := completionTable()
	switch pos[0] {
	case "bash":
		writeBash(g.Stdout, table)
	case "zsh":
		writeZsh(g.Stdout, table)
	case "fish":
		writeFish(g.Stdout, table)
	default:
		return fmt.Errorf("completion for %q: tether knows %s", pos[0], strings.Join(completionShells, ", "))
	}
	return nil
}

// compPath is what completion offers after a command path: "" (tether
// itself), "forward", "devices", "devices add".
type compPath struct {
	path  string
	words []string // commands, subcommands or the first argument's choices
	flags []compFlag
}

// compFlag is a flag as completion knows it.
type compFlag struct {
	name  string
	value string // the word for its value (FILE, ADDR, ...), "" for a bool
	usage string
}

func (f compFlag) takesFile() bool { return strings.Contains(f.value, "FILE") }

// completionTable is every command path with its words and flags, from
// the command table and the flag sets the commands really parse.
func completionTable() []compPath {
	global := flagsOf((&globals{}).newFlagSet("tether", ""), globalFlags)
	table := []compPath{{words: commandNames(), flags: global}}
	for i := range commands {
		c := &commands[i]
		if len(c.subs) == 0 {
			table = append(table, compPath{path: c.name, words: c.words, flags: flagsOf(commandFlags(c, ""), nil)})
			continue
		}
		table = append(table, compPath{path: c.name, words: c.subs, flags: global})
		for _, sub := range c.subs {
			table = append(table, compPath{path: c.name + " " + sub, flags: flagsOf(commandFlags(c, sub), nil)})
		}
	}
	return table
}

// flagsOf describes the named flags of fs (every one when names is nil).
func flagsOf(fs *flag.FlagSet, names []string) []compFlag {
	if names == nil {
		// The command's own flags first: they are the ones looked for.
		for _, n := range cliflag.Names(fs) {
			if !slices.Contains(globalFlags, n) {
				names = append(names, n)
			}
		}
		names = append(names, globalFlags...)
	}
	out := make([]compFlag, len(names))
	for i, n := range names {
		_, usage := flag.UnquoteUsage(fs.Lookup(n))
		out[i] = compFlag{name: n, value: cliflag.ValueName(fs, n), usage: usage}
	}
	return out
}

// groups are the commands with subcommands.
func groups() []string {
	var out []string
	for _, c := range commands {
		if len(c.subs) > 0 {
			out = append(out, c.name)
		}
	}
	return out
}

// flagNames are the names of the flags in table for which keep is true,
// each once, sorted.
func flagNames(table []compPath, keep func(compFlag) bool) []string {
	var out []string
	for _, p := range table {
		for _, f := range p.flags {
			if keep(f) && !slices.Contains(out, f.name) {
				out = append(out, f.name)
			}
		}
	}
	slices.Sort(out)
	return out
}

func takesValue(f compFlag) bool { return f.value != "" }

// shFunctions are the parts of the bash and zsh scripts that both shells
// run alike: the tables as case statements and lists, and _tether_path,
// which finds the command path in the words before the cursor, skipping
// flags and their values.
func shFunctions(w io.Writer, table []compPath) {
	list := func(names []string) string { return "|" + strings.Join(names, "|") + "|" }
	fmt.Fprintf(w, "_tether_valued='%s'\n", list(flagNames(table, takesValue)))
	fmt.Fprintf(w, "_tether_files='%s'\n", list(flagNames(table, compFlag.takesFile)))
	fmt.Fprintf(w, "_tether_groups='%s'\n\n", list(groups()))

	fmt.Fprint(w, "_tether_words() {\n\tcase \"$1\" in\n")
	for _, p := range table {
		if len(p.words) > 0 {
			fmt.Fprintf(w, "\t'%s') echo '%s' ;;\n", p.path, strings.Join(p.words, " "))
		}
	}
	fmt.Fprint(w, "\tesac\n}\n\n")

	fmt.Fprint(w, "_tether_flags() {\n\tcase \"$1\" in\n")
	for _, p := range table {
		names := make([]string, len(p.flags))
		for i, f := range p.flags {
			names[i] = "--" + f.name
		}
		fmt.Fprintf(w, "\t'%s') echo '%s' ;;\n", p.path, strings.Join(names, " "))
	}
	fmt.Fprint(w, "\tesac\n}\n\n")

	fmt.Fprint(w, `# _tether_is LIST WORD: WORD is a flag (-name, --name) in LIST.
_tether_is() {
	case "$2" in
	-*=*) return 1 ;;
	-*) ;;
	*) return 1 ;;
	esac
	local n=${2#-}
	n=${n#-}
	case "$1" in
	*"|$n|"*) return 0 ;;
	esac
	return 1
}

# _tether_path WORDS...: the command path the words make: "", "forward",
# "devices add".
_tether_path() {
	local cmd= sub= skip= w
	for w in "$@"; do
		if [ -n "$skip" ]; then
			skip=
			continue
		fi
		case "$w" in
		--) break ;;
		-*)
			if _tether_is "$_tether_valued" "$w"; then
				skip=1
			fi
			continue
			;;
		esac
		if [ -z "$cmd" ]; then
			cmd=$w
		elif [ -z "$sub" ] && case "$_tether_groups" in *"|$cmd|"*) true ;; *) false ;; esac; then
			sub=$w
		else
			break
		fi
	done
	echo "$cmd${sub:+ $sub}"
}
`)
}

func writeBash(w io.Writer, table []compPath) {
	fmt.Fprint(w, "# bash completion for tether, made by 'tether completion bash'.\n\n")
	shFunctions(w, table)
	fmt.Fprint(w, `
_tether() {
	# The words before the cursor come from the line itself: bash's own
	# COMP_WORDS splits --hub=HostName=...;... at every = and :.
	local line=${COMP_LINE:0:COMP_POINT} cur= prev=
	local -a words
	read -r -a words <<<"$line"
	if [[ $line == *[[:space:]] || ${#words[@]} -le 1 ]]; then
		cur=
	else
		cur=${words[${#words[@]}-1]}
		unset 'words[${#words[@]}-1]'
	fi
	prev=${words[${#words[@]}-1]}
	local path
	path=$(_tether_path "${words[@]:1}")
	COMPREPLY=()
	if _tether_is "$_tether_files" "$prev"; then
		compopt -o filenames 2>/dev/null
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
	elif _tether_is "$_tether_valued" "$prev"; then
		return 0
	elif [[ $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$(_tether_flags "$path")" -- "$cur")
	else
		mapfile -t COMPREPLY < <(compgen -W "$(_tether_words "$path")" -- "$cur")
	fi
}
complete -F _tether tether
`)
}

func writeZsh(w io.Writer, table []compPath) {
	fmt.Fprint(w, "#compdef tether\n# zsh completion for tether, made by 'tether completion zsh'.\n\n")
	shFunctions(w, table)
	fmt.Fprint(w, `
_tether() {
	local cur=${words[CURRENT]} prev=${words[CURRENT-1]} path_
	path_=$(_tether_path "${(@)words[2,CURRENT-1]}")
	local -a choices
	if _tether_is "$_tether_files" "$prev"; then
		_files
		return
	elif _tether_is "$_tether_valued" "$prev"; then
		return 1
	elif [[ $cur == -* ]]; then
		choices=(${=$(_tether_flags "$path_")})
	else
		choices=(${=$(_tether_words "$path_")})
	fi
	compadd -- "${choices[@]}"
}

# Loaded from $fpath, the file is _tether's body; sourced, it registers.
if [ "$funcstack[1]" = "_tether" ]; then
	_tether "$@"
else
	compdef _tether tether
fi
`)
}

func writeFish(w io.Writer, table []compPath) {
	fmt.Fprint(w, "# fish completion for tether, made by 'tether completion fish'.\n\n")
	fmt.Fprintf(w, "set -g __tether_valued %s\n", strings.Join(flagNames(table, takesValue), " "))
	fmt.Fprintf(w, "set -g __tether_groups %s\n", strings.Join(groups(), " "))
	fmt.Fprint(w, `
# __tether_path prints the command path before the cursor: "", "forward",
# "devices add"; flags and their values are skipped.
function __tether_path
    set -l toks (commandline -opc)
    set -e toks[1]
    set -l cmd
    set -l sub
    set -l skip 0
    for w in $toks
        if test $skip = 1
            set skip 0
            continue
        end
        switch $w
            case --
                break
            case '-*=*'
                continue
            case '-*'
                if contains -- (string trim -l -c - -- $w) $__tether_valued
                    set skip 1
                end
                continue
        end
        if test -z "$cmd"
            set cmd $w
        else if test -z "$sub"; and contains -- $cmd $__tether_groups
            set sub $w
        else
            break
        end
    end
    string trim -- "$cmd $sub"
end

function __tether_at
    set -l p (__tether_path)
    test "$p" = "$argv[1]"
end

complete -c tether -f
`)
	for _, p := range table {
		cond := fishQuote(`__tether_at "` + p.path + `"`)
		if len(p.words) > 0 {
			fmt.Fprintf(w, "complete -c tether -n %s -a %s\n", cond, fishQuote(strings.Join(p.words, " ")))
		}
		for _, f := range p.flags {
			fmt.Fprintf(w, "complete -c tether -n %s -l %s", cond, f.name)
			switch {
			case f.takesFile():
				fmt.Fprint(w, " -r -F") // a value, which is a file name
			case takesValue(f):
				fmt.Fprint(w, " -x") // a value, not a file name
			}
			fmt.Fprintf(w, " -d %s\n", fishQuote(summary(f.usage)))
		}
	}
}

// fishQuote quotes s for fish, in single quotes.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// summary is the start of a flag's usage, short enough for a completion
// menu.
func summary(usage string) string {
	if i := strings.IndexAny(usage, ";(\n"); i > 0 {
		usage = usage[:i]
	}
	usage = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(usage), ":"))
	if r := []rune(usage); len(r) > 60 {
		usage = string(r[:59]) + "…"
	}
	return usage
}
