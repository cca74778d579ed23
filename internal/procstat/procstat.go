// Package procstat reads what Linux's /proc/PID/stat says of a process:
// its state and its session. The agent's shell uses it to find what a
// shell started, and tests to tell that a process ended. Elsewhere than
// Linux every read fails, and no process is alive.
package procstat

import (
	"bytes"
	"errors"
	"os"
	"strconv"
)

// Stat is the part of /proc/PID/stat Tether reads.
type Stat struct {
	State   byte // R, S, D, Z, T ...; Z is a zombie: ended, not yet reaped
	Session int
}

// Read reads pid's stat.
func Read(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	// pid (comm) state ppid pgrp session ...; comm may hold spaces and
	// parentheses, so the fields are counted after its last ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, errors.New("procstat: no ')' in /proc/" + strconv.Itoa(pid) + "/stat")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 4 || len(f[0]) != 1 {
		return Stat{}, errors.New("procstat: short /proc/" + strconv.Itoa(pid) + "/stat")
	}
	sid, err := strconv.Atoi(string(f[3]))
	if err != nil {
		return Stat{}, errors.New("procstat: session of /proc/" + strconv.Itoa(pid) + "/stat: " + err.Error())
	}
	return Stat{State: f[0][0], Session: sid}, nil
}

// Alive says whether pid is a process that has not ended (a zombie has).
func Alive(pid int) bool {
	st, err := Read(pid)
	return err == nil && st.State != 'Z'
}
