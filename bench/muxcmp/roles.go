package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// writeCert makes the hub's kind of certificate, ECDSA P-256 for
// 127.0.0.1, so that the TLS cost is the one Tether's ends pay.
func writeCert(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "muxcmp hub"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = dir+"/hub.crt", dir+"/hub.key"
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

func serverTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, nil
}

func clientTLS(certFile string) (*tls.Config, error) {
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("no certificate in %s", certFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}, nil
}

// dialTLS makes one session's connection and finishes its handshake, so
// that no handshake is counted in a stream's setup.
func dialTLS(addr string, cfg *tls.Config) (net.Conn, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	return c, c.Handshake()
}

// hub terminates the service's sessions and the device's one and splices
// each service stream to a new stream on the device's session, as Tether's
// hub must, since it authorises each stream on its own.
type hub struct {
	cand    candidate
	window  int
	tls     *tls.Config
	devMu   sync.Mutex
	dev     session
	devCh   chan struct{}
	streams atomic.Int64
}

func runHub(cand candidate, window int, tlsCfg *tls.Config, svcLn, devLn, ctlLn net.Listener) {
	h := &hub{cand: cand, window: window, tls: tlsCfg, devCh: make(chan struct{})}
	go h.acceptDevices(devLn)
	go serveControl(ctlLn, func(cmd string) string {
		switch cmd {
		case "mem":
			// Two collections: the first only moves sync.Pool's buffers
			// (smux keeps its frames there) to the victim cache.
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return fmt.Sprintf("%d %d %d %d", ms.HeapInuse, ms.StackInuse, h.streams.Load(), runtime.NumGoroutine())
		}
		return "?"
	})
	for {
		c, err := svcLn.Accept()
		if err != nil {
			return
		}
		go h.serveService(tls.Server(c, h.tls))
	}
}

func (h *hub) acceptDevices(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Server(c, h.tls)
		if err := tc.Handshake(); err != nil {
			c.Close()
			continue
		}
		s, err := h.cand.new(tc, false, true, h.window)
		if err != nil {
			c.Close()
			continue
		}
		h.devMu.Lock()
		first := h.dev == nil
		h.dev = s
		h.devMu.Unlock()
		if first {
			close(h.devCh)
		}
	}
}

func (h *hub) serveService(c *tls.Conn) {
	if err := c.Handshake(); err != nil {
		c.Close()
		return
	}
	s, err := h.cand.new(c, false, false, h.window)
	if err != nil {
		c.Close()
		return
	}
	defer s.Close()
	<-h.devCh
	h.devMu.Lock()
	dev := h.dev
	h.devMu.Unlock()
	for {
		st, err := s.Accept()
		if err != nil {
			return
		}
		go h.splice(st, dev)
	}
}

// splice is the hub's relay of one stream: a 32 KiB buffer each way, as
// io.Copy's, and each side closed when either direction ends.
func (h *hub) splice(svc io.ReadWriteCloser, dev session) {
	d, err := dev.Open()
	if err != nil {
		svc.Close()
		return
	}
	h.streams.Add(1)
	defer h.streams.Add(-1)
	done := make(chan struct{}, 2)
	go func() { io.Copy(d, svc); done <- struct{}{} }()
	go func() { io.Copy(svc, d); done <- struct{}{} }()
	<-done
	svc.Close()
	d.Close()
	<-done
}

// A stream's first byte tells the device what to be: the loads' target.
const (
	cmdEcho   = 'e' // echo everything
	cmdSource = 'd' // send without end, for the bulk rate
	cmdStall  = 's' // never read again: a stalled service behind the device
)

type device struct {
	mu      sync.Mutex
	stalled []io.Closer
}

func (d *device) handle(c io.ReadWriteCloser) {
	var cmd [1]byte
	if _, err := io.ReadFull(c, cmd[:]); err != nil {
		c.Close()
		return
	}
	switch cmd[0] {
	case cmdEcho:
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		c.Close()
	case cmdSource:
		buf := make([]byte, 256<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				break
			}
		}
		c.Close()
	case cmdStall:
		d.mu.Lock()
		d.stalled = append(d.stalled, c)
		d.mu.Unlock()
	default:
		c.Close()
	}
}

func (d *device) release() int {
	d.mu.Lock()
	s := d.stalled
	d.stalled = nil
	d.mu.Unlock()
	for _, c := range s {
		c.Close()
	}
	return len(s)
}

// runDevice serves the direct baseline on directLn and, unless cand is
// empty, holds one session to the hub and serves its streams.
func runDevice(cand *candidate, window int, hubAddr string, tlsCfg *tls.Config, directLn, ctlLn net.Listener) error {
	d := &device{}
	go serveControl(ctlLn, func(cmd string) string {
		if cmd == "release" {
			return fmt.Sprint(d.release())
		}
		return "?"
	})
	if cand != nil {
		c, err := dialTLS(hubAddr, tlsCfg)
		if err != nil {
			return err
		}
		s, err := cand.new(c, true, false, window)
		if err != nil {
			return err
		}
		go func() {
			for {
				st, err := s.Accept()
				if err != nil {
					return
				}
				go d.handle(st)
			}
		}()
	}
	for {
		c, err := directLn.Accept()
		if err != nil {
			return nil
		}
		go d.handle(c)
	}
}

// serveControl answers one-line commands from the orchestrator.
func serveControl(ln net.Listener, answer func(string) string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := fmt.Fprintln(c, answer(strings.TrimSpace(line))); err != nil {
					return
				}
			}
		}()
	}
}
