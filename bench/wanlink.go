package bench

// A packet-level WAN link. The delaying relay (delay.go) terminates TCP on
// both sides, so each end's TCP sees a loopback round trip and a window
// that never has to cover the link: a bandwidth-delay product is invisible
// through it. This link forwards IP packets between two TUN devices, one
// in this process's network namespace and one in a new namespace, so the
// two ends' TCP connections cross it end to end and see its round trip,
// its rate and its losses, as they would a WAN's. The kernel here has no
// netem qdisc, which would do the same in the kernel.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// WANLinkConfig is the link's shape. The bottleneck is the same each way.
type WANLinkConfig struct {
	// Delay is what each packet waits each way after its turn on the
	// bottleneck: the round trip is twice it, plus queueing.
	Delay time.Duration
	// Rate is the bottleneck's rate in bits per second; 0: no limit.
	Rate float64
	// Queue is how many bytes wait for the bottleneck before it drops
	// what comes next, as a router's queue does; 0: one bandwidth-delay
	// product (Rate × 2 × Delay), enough for one TCP flow to fill the link.
	Queue int
}

// WANLink joins this process's network namespace ("host") to a new one
// ("peer") through a TUN device in each, with HostAddr and PeerAddr on
// either side. Processes the peer side starts (InPeer) and sockets it
// opens live in the peer namespace, and reach the host side only across
// the link.
type WANLink struct {
	HostAddr, PeerAddr netip.Addr
	// Dropped counts the packets the bottleneck's queue refused.
	Dropped atomic.Int64

	cfg       WANLinkConfig
	ns        *os.File // the peer namespace, held open
	host      *os.File // TUN in the host namespace
	peer      *os.File // TUN in the peer namespace
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// wanMTU is the TUN devices' MTU: Ethernet's, so that TCP's segments and
// their count per second are a WAN's, not loopback's 64 KiB.
const wanMTU = 1500

// StartWANLink creates the peer namespace and the two TUN devices and
// starts forwarding. It needs CAP_NET_ADMIN and CAP_SYS_ADMIN (root) and
// /dev/net/tun.
func StartWANLink(cfg WANLinkConfig) (*WANLink, error) {
	if cfg.Delay < 0 || cfg.Rate < 0 || cfg.Queue < 0 {
		return nil, fmt.Errorf("wan link: negative delay, rate or queue in %+v", cfg)
	}
	if cfg.Queue == 0 && cfg.Rate > 0 {
		cfg.Queue = max(int(cfg.Rate*2*cfg.Delay.Seconds()/8), 64*wanMTU)
	}
	subnet, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	l := &WANLink{cfg: cfg, HostAddr: subnet.Addr().Next(), PeerAddr: subnet.Addr().Next().Next()}
	// The peer side first, on a thread of its own that unshares its
	// network namespace and is then discarded (never unlocked), so no
	// other goroutine runs in it.
	type made struct {
		ns, tun *os.File
		err     error
	}
	ch := make(chan made, 1)
	go func() {
		runtime.LockOSThread()
		var m made
		defer func() { ch <- m }()
		if m.err = unix.Unshare(unix.CLONE_NEWNET); m.err != nil {
			m.err = fmt.Errorf("wan link: a new network namespace: %w", m.err)
			return
		}
		if m.ns, m.err = os.Open("/proc/thread-self/ns/net"); m.err != nil {
			return
		}
		if m.err = ifUp("lo", netip.Prefix{}); m.err != nil {
			return
		}
		m.tun, m.err = openTUN(netip.PrefixFrom(l.PeerAddr, 24))
	}()
	m := <-ch
	if m.err != nil {
		closeFiles(m.ns, m.tun)
		return nil, m.err
	}
	l.ns, l.peer = m.ns, m.tun
	if l.host, err = openTUN(netip.PrefixFrom(l.HostAddr, 24)); err != nil {
		closeFiles(l.ns, l.peer)
		return nil, err
	}
	l.wg.Add(2)
	go l.forward(l.host, l.peer)
	go l.forward(l.peer, l.host)
	return l, nil
}

// RTT is the link's round trip with empty queues.
func (l *WANLink) RTT() time.Duration { return 2 * l.cfg.Delay }

// Config is the link's shape, its queue filled in.
func (l *WANLink) Config() WANLinkConfig { return l.cfg }

// InPeer runs f on a thread in the peer namespace: a socket f opens and a
// process it starts (os/exec forks from the calling thread) belong to the
// peer side. Goroutines f starts run wherever the scheduler puts them, so
// f must open its sockets itself.
func (l *WANLink) InPeer(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		defer home.Close()
		if err := unix.Setns(int(l.ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("wan link: entering the peer namespace: %w", err)
			return
		}
		ferr := f()
		// A thread that cannot go home stays locked, and ends with this
		// goroutine instead of running others in the wrong namespace.
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- errors.Join(ferr, fmt.Errorf("wan link: leaving the peer namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		ch <- ferr
	}()
	return <-ch
}

// Close stops forwarding and removes both devices; the peer namespace
// goes with the last process in it. Stop what InPeer started first.
func (l *WANLink) Close() {
	l.closeOnce.Do(func() {
		closeFiles(l.host, l.peer)
		l.wg.Wait()
		closeFiles(l.ns)
	})
}

// packet is one IP packet on its way, and when it leaves the link.
type packet struct {
	b   []byte
	due time.Time
}

// forward moves packets from src to dst: each takes its turn on the
// bottleneck (its size at the rate, after the packets queued before it),
// is dropped if the queue already holds Queue bytes, and leaves Delay
// after its turn ends.
func (l *WANLink) forward(src, dst *os.File) {
	defer l.wg.Done()
	// Enough for the packets in flight of a 1 Gbit/s link with a second's
	// delay; a fuller line drops, which TCP recovers from.
	line := make(chan packet, 16384)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p := range line {
			if d := time.Until(p.due); d > 0 {
				time.Sleep(d)
			}
			// A write fails only once the link is closing.
			dst.Write(p.b)
		}
	}()
	defer func() {
		close(line)
		<-done
	}()
	var free time.Time // when the bottleneck is next idle
	for {
		b := make([]byte, wanMTU+64)
		n, err := src.Read(b)
		if err != nil {
			return
		}
		now := time.Now()
		due := now
		if l.cfg.Rate > 0 {
			start := later(now, free)
			queued := start.Sub(now).Seconds() * l.cfg.Rate / 8
			if queued+float64(n) > float64(l.cfg.Queue) {
				l.Dropped.Add(1)
				continue
			}
			free = start.Add(time.Duration(float64(n) * 8 / l.cfg.Rate * float64(time.Second)))
			due = free
		}
		select {
		case line <- packet{b: b[:n], due: due.Add(l.cfg.Delay)}:
		default:
			l.Dropped.Add(1)
		}
	}
}

// openTUN creates a TUN device (IP packets, no header) in the calling
// thread's network namespace, with addr and its prefix on it, up.
func openTUN(addr netip.Prefix) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("wan link: /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq("twan%d")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("wan link: TUNSETIFF: %w", err)
	}
	// Non-blocking, so that the runtime's poller serves its reads and
	// Close ends a read in progress.
	f := os.NewFile(uintptr(fd), "tun "+ifr.Name())
	if err := ifUp(ifr.Name(), addr); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ifUp sets addr (when valid) and the MTU on the interface name and brings
// it up, in the calling thread's network namespace, as `ip addr add` and
// `ip link set up` would.
func ifUp(name string, addr netip.Prefix) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	fail := func(what string, err error) error { return fmt.Errorf("wan link: %s of %s: %w", what, name, err) }
	if addr.IsValid() {
		if err := ifr.SetInet4Addr(addr.Addr().AsSlice()); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(s, unix.SIOCSIFADDR, ifr); err != nil {
			return fail("address", err)
		}
		mask := net.CIDRMask(addr.Bits(), 32)
		if err := ifr.SetInet4Addr(mask); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(s, unix.SIOCSIFNETMASK, ifr); err != nil {
			return fail("netmask", err)
		}
		ifr.SetUint32(wanMTU)
		if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
			return fail("MTU", err)
		}
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fail("flags", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fail("flags", err)
	}
	return nil
}

// freeSubnet picks a /24 of 10.99.0.0/16 that no interface here has, so
// that links of concurrent runs do not share a route.
func freeSubnet() (netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Prefix{}, err
	}
	used := map[byte]bool{}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip4 := n.IP.To4(); ip4 != nil && ip4[0] == 10 && ip4[1] == 99 {
				used[ip4[2]] = true
			}
		}
	}
	for i := 0; i < 256; i++ {
		if !used[byte(i)] {
			return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 99, byte(i), 0}), 24), nil
		}
	}
	return netip.Prefix{}, errors.New("wan link: every /24 of 10.99.0.0/16 is taken")
}

func closeFiles(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
