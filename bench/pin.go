package bench

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Pin sets the CPU affinity of every thread of process pid to cpus, so
// that a load's processes and an attacker's can be kept on different
// cores of one machine. Threads a process starts later inherit the
// affinity of the thread that starts them, so pinning all the present
// ones pins the process; Pin goes over them twice for a thread started
// meanwhile.
func Pin(pid int, cpus ...int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	for range 2 {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return fmt.Errorf("bench: pin %d: %w", pid, err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			// A thread that ended meanwhile is no error.
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("bench: pin thread %d of %d: %w", tid, pid, err)
			}
		}
	}
	return nil
}

// CPUs lists 0 to n-1.
func CPUs(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
