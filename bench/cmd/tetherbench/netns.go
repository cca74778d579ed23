package main

// The stalled-streams load runs in a network namespace of its own. A
// stalled stream fills the kernel's socket buffers on every hop as well
// as the processes', and on loopback (an MSS of 64 KiB, tcp_rmem allowing
// 32 MiB and tcp_wmem 4 MiB here) that is 10 to 25 MiB a stream: a hundred
// stalled streams take the machine's TCP memory (tcp_mem, one budget for
// the whole kernel) past its pressure threshold, where every TCP
// connection of the machine is starved, the hub's own connection to its
// embedded NATS included. tcp_rmem and tcp_wmem are set per namespace, so
// the load's namespace caps them, and the processes' memory, which is the
// figure, is measured with the kernel's share kept small and off the
// machine's other users.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
	"unsafe"
)

// netnsEnv names the file that tells a harness started in a new network
// namespace what to run.
const netnsEnv = "TETHERBENCH_NETNS_SPEC"

// The socket buffers of the stalled load's namespace (min, default, max),
// as tcp_rmem and tcp_wmem take them. A receive buffer is the machine's
// default (128 KiB) and does not grow; a send buffer, which on loopback
// would start at megabytes for its 64 KiB segments, holds 64 KiB at most.
// What a process reads at once, and so how much of its own buffers a
// stalled stream fills, depends on the receive buffers: allowed to grow
// to 1 MiB, they took the hub to 683 KiB a stalled stream, and the
// machine's TCP memory past its pressure threshold at 1,000 streams.
const (
	netnsRmem = "4096 131072 131072"
	netnsWmem = "4096 16384 65536"
)

// netnsSpec is what the harness in the namespace runs and where it puts
// its result.
type netnsSpec struct {
	Bins       map[string]string
	Out        string
	Result     string
	StalledN   int
	StalledMax time.Duration
	// TCPPressure is the machine's tcp_mem pressure threshold in bytes,
	// which a namespace other than the first does not show.
	TCPPressure int64
}

// stalledInNetns runs the stalled load in a harness of its own, started
// in a new network namespace, and takes its figure. started is false when
// the namespace itself was refused (no CAP_SYS_ADMIN).
func (r *runner) stalledInNetns(ctx context.Context) (started bool, err error) {
	self, err := os.Executable()
	if err != nil {
		return false, err
	}
	spec := netnsSpec{Bins: r.bins, Out: r.out, Result: filepath.Join(r.out, "stalled-netns.json"),
		StalledN: r.cfg.stalledN, StalledMax: r.cfg.stalledMax}
	_, spec.TCPPressure = tcpMem()
	os.Remove(spec.Result)
	specPath := filepath.Join(r.out, "stalled-netns-spec.json")
	if err := saveJSON(specPath, spec); err != nil {
		return false, err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), netnsEnv+"="+specPath)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	// Its own children are its to stop; a ^C reaches it with ours.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		return false, err
	}
	if err := cmd.Wait(); err != nil {
		return true, fmt.Errorf("the stalled load in its network namespace: %w", err)
	}
	b, err := os.ReadFile(spec.Result)
	if err != nil {
		return true, err
	}
	fig := &StallFig{}
	if err := json.Unmarshal(b, fig); err != nil {
		return true, fmt.Errorf("%s: %w", spec.Result, err)
	}
	r.res.Stalled = fig
	return true, nil
}

// runNetnsChild is the harness in the new namespace: it brings loopback
// up, caps the socket buffers, runs the stalled load and writes its
// figure. It returns the process's exit code.
func runNetnsChild(specPath string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "tetherbench (network namespace):", err)
		return 1
	}
	var spec netnsSpec
	b, err := os.ReadFile(specPath)
	if err != nil {
		return fail(err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return fail(err)
	}
	if err := loopbackUp(); err != nil {
		return fail(fmt.Errorf("bringing loopback up: %w", err))
	}
	for k, v := range map[string]string{"tcp_rmem": netnsRmem, "tcp_wmem": netnsWmem} {
		if err := os.WriteFile("/proc/sys/net/ipv4/"+k, []byte(v), 0o644); err != nil {
			return fail(err)
		}
	}
	if _, err := raiseNofile(); err != nil {
		return fail(err)
	}
	ctx, stop := signalContext()
	defer stop()
	r := &runner{
		cfg:     &config{stalledN: spec.StalledN, stalledMax: spec.StalledMax, tcpPressure: spec.TCPPressure},
		started: time.Now(), out: spec.Out, bins: spec.Bins,
	}
	r.logf("stalled: in a network namespace of its own, tcp_rmem %q, tcp_wmem %q", netnsRmem, netnsWmem)
	err = r.measureStalled(ctx)
	r.stopAll()
	if err != nil {
		return fail(err)
	}
	r.res.Stalled.Netns = fmt.Sprintf("tcp_rmem %s, tcp_wmem %s", netnsRmem, netnsWmem)
	if err := saveJSON(spec.Result, r.res.Stalled); err != nil {
		return fail(err)
	}
	return 0
}

// loopbackUp sets lo up, as `ip link set lo up` does, with the
// SIOCSIFFLAGS ioctl: a new network namespace's loopback starts down.
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	// struct ifreq: the name in 16 bytes, then a union whose first field
	// is the flags (short).
	var ifr [40]byte
	copy(ifr[:syscall.IFNAMSIZ-1], "lo")
	binary.NativeEndian.PutUint16(ifr[syscall.IFNAMSIZ:], syscall.IFF_UP|syscall.IFF_LOOPBACK|syscall.IFF_RUNNING)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return e
	}
	return nil
}
