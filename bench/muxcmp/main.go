// Command muxcmp measures stream multiplexers on Tether's topology, to
// choose the one that carries many streams on one connection between
// Tether's own ends and the hub.
//
// A service and a device each hold one TLS 1.3 connection (ECDSA P-256, as
// the hub's certificate) to a hub in between, each side in a process of
// its own. The hub ends both sessions and splices every stream of the
// service's session to a new stream on the device's, since Tether's hub
// authorises each stream alone and cannot pass a session through. The
// candidates are yamux, smux (protocol version 2) and HTTP/2 streams
// (golang.org/x/net/http2, a stream is a POST whose two bodies carry its
// two directions), each measured in one run beside a direct TCP
// connection, in rounds that interleave them, because the machine is
// shared: the figures are medians of the rounds and ratios to direct.
//
// It is a module of its own so that the candidates stay out of Tether's
// module graph until one is chosen. Run it from this folder:
//
//	go run . -rounds 3
//
// The run takes about three minutes on two cores.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"
)

func main() {
	role := flag.String("role", "", "internal: hub or device (a child process of the run)")
	muxName := flag.String("mux", "", "internal: the candidate of a child; none for the direct baseline")
	certFile := flag.String("cert", "", "internal: the hub's certificate")
	keyFile := flag.String("key", "", "internal: the hub's key")
	hubAddr := flag.String("hub", "", "internal: the hub's address for the device")
	window := flag.Int("window", 256<<10, "the window per stream given to every candidate, bytes")
	rounds := flag.Int("rounds", 3, "rounds, each of which runs every load on every path")
	only := flag.String("only", "", "comma-separated candidates to run (default: all)")
	flag.Parse()
	log.SetFlags(0)
	switch *role {
	case "hub":
		childHub(*muxName, *window, *certFile, *keyFile)
	case "device":
		childDevice(*muxName, *window, *hubAddr, *certFile)
	case "":
		names := []string{"yamux", "smux", "h2"}
		if *only != "" {
			names = strings.Split(*only, ",")
		}
		if err := orchestrate(names, *window, *rounds); err != nil {
			log.Fatal(err)
		}
	default:
		log.Fatalf("unknown role %q", *role)
	}
}

func listen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	return ln
}

func childHub(name string, window int, certFile, keyFile string) {
	cand, ok := candidates[name]
	if !ok {
		log.Fatalf("unknown candidate %q", name)
	}
	cfg, err := serverTLS(certFile, keyFile)
	if err != nil {
		log.Fatal(err)
	}
	svc, dev, ctl := listen(), listen(), listen()
	fmt.Println("ready", svc.Addr(), dev.Addr(), ctl.Addr())
	runHub(cand, window, cfg, svc, dev, ctl)
}

func childDevice(name string, window int, hubAddr, certFile string) {
	var cand *candidate
	if name != "none" {
		c, ok := candidates[name]
		if !ok {
			log.Fatalf("unknown candidate %q", name)
		}
		cand = &c
	}
	cfg, err := clientTLS(certFile)
	if err != nil {
		log.Fatal(err)
	}
	direct, ctl := listen(), listen()
	fmt.Println("ready", direct.Addr(), ctl.Addr())
	if err := runDevice(cand, window, hubAddr, cfg, direct, ctl); err != nil {
		log.Fatal(err)
	}
}

// child is a process the run started; it is killed by its own id.
type child struct {
	cmd   *exec.Cmd
	addrs []string
}

func startChild(args ...string) (*child, error) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) < 2 || f[0] != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("%v: no ready line (%q): %v", args, line, err)
	}
	return &child{cmd: cmd, addrs: f[1:]}, nil
}

func (c *child) stop() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}
