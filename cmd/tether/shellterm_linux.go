package main

import "golang.org/x/sys/unix"

// The ioctls of a terminal's settings.
const (
	ioctlGetTermios = unix.TCGETS
	ioctlSetTermios = unix.TCSETS
)
