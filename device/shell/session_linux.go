package shell

import (
	"os"
	"strconv"

	"github.com/tether-io/tether/internal/procstat"
)

// sessionMembers lists the live processes of session sid, from /proc:
// what a shell started keeps its session unless it left it (setsid), and
// a job in a process group of its own is still found.
func sessionMembers(sid int) []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var pids []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid == sid {
			continue
		}
		st, err := procstat.Read(pid)
		if err == nil && st.State != 'Z' && st.Session == sid {
			pids = append(pids, pid)
		}
	}
	return pids
}
