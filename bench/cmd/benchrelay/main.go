// Command benchrelay is one hop of the benchmark's "limit" chain: the
// thinnest relay with Tether's topology. Each accepted connection gets a
// connection to the next hop and two io.Copy, nothing else: no WebSocket,
// no control plane, no pooling. TLS is on where Tether has it (forwarder →
// hub → agent), so the chain is
//
//	client → r1 ─TLS→ r2 ─TLS→ r3 → target
//
// and each connection through it pays two fresh TLS handshakes, as a new
// Tether stream does. It prints "listening ADDR" once ready.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to accept on")
	to := flag.String("to", "", "next hop host:port")
	cert := flag.String("cert", "", "serve TLS with this certificate (PEM)")
	key := flag.String("key", "", "key of --cert (PEM)")
	ca := flag.String("ca", "", "dial the next hop with TLS, trusting this CA (PEM)")
	flag.Parse()
	if *to == "" {
		log.Fatal("benchrelay: --to is required")
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *cert != "" {
		c, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatal(err)
		}
		// The hub's settings: its certificate, TLS 1.2 at least, Go's
		// defaults otherwise.
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12})
	}
	var clientConf *tls.Config
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			log.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatalf("benchrelay: no certificate in %s", *ca)
		}
		host, _, _ := net.SplitHostPort(*to)
		clientConf = &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
	}
	fmt.Printf("listening %s\n", ln.Addr())

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors: back off rather than spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go relay(c, *to, clientConf)
	}
}

func relay(c net.Conn, to string, conf *tls.Config) {
	defer c.Close()
	d := net.Dialer{Timeout: 10 * time.Second}
	var (
		next net.Conn
		err  error
	)
	if conf != nil {
		next, err = (&tls.Dialer{NetDialer: &d, Config: conf}).Dial("tcp", to)
	} else {
		next, err = d.Dial("tcp", to)
	}
	if err != nil {
		return
	}
	defer next.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Pass the end on (a TLS close_notify or a TCP FIN) so the far
		// side sees EOF, as Tether's close does.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go pipe(next, c)
	go pipe(c, next)
	<-done
	// One direction ended; Tether ends the whole stream then, so do we,
	// and the connections do not linger in half-closed states.
	c.Close()
	next.Close()
	<-done
}
