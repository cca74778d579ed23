// Package shell quotes words for a POSIX shell, for the commands that
// Tether's messages tell a user to run: a path with a space in it must
// still paste as one word.
package shell

import "strings"

// Quote returns s as one shell word: s itself when no character in it is
// special to a shell, else s in single quotes.
func Quote(s string) string {
	if !strings.ContainsAny(s, " \t'\"$`\\*?[]{}()<>|&;#~!") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
