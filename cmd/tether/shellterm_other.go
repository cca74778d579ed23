//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly && !windows

package main

import "io"

// plainTerminal is stdin as it is: no raw mode, no window size.
type plainTerminal struct{}

func openTerminal(io.Reader) (localTerminal, error) { return plainTerminal{}, nil }

func (plainTerminal) size() (rows, cols uint16, ok bool) { return 0, 0, false }
func (plainTerminal) resized() <-chan struct{}           { return nil }
func (plainTerminal) isTerminal() bool                   { return false }
func (plainTerminal) restore()                           {}
