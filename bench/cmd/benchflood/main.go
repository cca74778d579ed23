// Command benchflood is the attacker of the harness's authflood load: it
// makes failing device logins against a hub at a steady rate from several
// loopback source addresses (bench.Flood), for a bounded time, and writes
// what the hub answered as JSON. It runs as its own process so that its
// CPU time can be told apart from the hub's and the load generator's.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tether-io/tether/bench"
)

func main() {
	var f bench.Flood
	flag.StringVar(&f.Host, "host", "127.0.0.1", "the hub's host name, for the token and the MQTT username")
	flag.StringVar(&f.Device, "device", "", "a device the hub knows (the token is signed with a wrong key)")
	flag.StringVar(&f.MQTTAddr, "mqtt", "", "the hub's MQTT over TLS address")
	flag.StringVar(&f.WSURL, "ws", "", "the hub's MQTT over WebSocket URL (wss://…/$iothub/websocket); empty for none")
	flag.IntVar(&f.WSEvery, "ws-every", 10, "send one attempt in this many over WebSocket (0: none)")
	sources := flag.String("sources", "127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4,127.0.1.5,127.0.1.6,127.0.1.7,127.0.1.8", "loopback addresses to dial from, comma-separated")
	flag.Float64Var(&f.Rate, "rate", 1000, "attempts a second")
	flag.DurationVar(&f.Duration, "dur", 10*time.Second, "how long to start attempts for (at most 2 minutes)")
	flag.IntVar(&f.MaxInFlight, "inflight", 512, "attempts in progress at most")
	flag.DurationVar(&f.Timeout, "timeout", 5*time.Second, "time limit of one attempt")
	out := flag.String("out", "", "write the result here as JSON (default stdout)")
	flag.Parse()
	if f.Device == "" || f.MQTTAddr == "" {
		log.Fatal("benchflood: -device and -mqtt are required")
	}
	f.Duration = min(f.Duration, 2*time.Minute)
	for s := range strings.SplitSeq(*sources, ",") {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil || !ip.IsLoopback() {
			log.Fatalf("benchflood: source %q is not a loopback address", s)
		}
		f.SourceIPs = append(f.SourceIPs, ip)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res := f.Run(ctx)
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		log.Fatal(err)
	}
	if *out == "" {
		os.Stdout.Write(append(b, '\n'))
		return
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		log.Fatal(err)
	}
}
