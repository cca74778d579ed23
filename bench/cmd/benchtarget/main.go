// Command benchtarget is the benchmark's TCP target (bench.Target) in a
// process of its own, for the loads whose connections would not fit in
// the harness's descriptors beside their clients: 10,000 streams hold
// 10,000 connections at each end. It prints "listening ADDR" once ready
// and runs until SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/tether-io/tether/bench"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to accept on")
	flag.Parse()
	t, err := bench.StartTarget(*listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", t.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	// Exit without closing every connection one by one: the process's end
	// closes them all at once.
	os.Exit(0)
}
