package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tether-io/tether/bench"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
)

// hub is a running tetherd and what clients need to reach it.
type hub struct {
	proc      *bench.Proc
	dir       string
	httpAddr  string
	mqttAddr  string
	owner     string // owner connection string
	tlsConf   *tls.Config
	svc       *service.Client
	pprofAddr string // "" unless built with the pprof hook
	// metricsAddr serves /metrics; set only on a hub with its default
	// limits, whose refusals are counted there, and on one behind a WAN
	// link.
	metricsAddr string
}

// freePort returns a loopback address free right now. The tiny race with
// another process taking it is acceptable for a benchmark run.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startHub starts tetherd on dir, extra appended to its flags. Unless
// defaults, the limits that would stand in the way of the loads are
// lifted.
func (r *runner) startHub(ctx context.Context, name, bin, dir string, pprof, defaults bool, extra ...string) (*hub, error) {
	return r.startHubOn(ctx, name, bin, dir, "", pprof, defaults, extra...)
}

// startHubOn is startHub whose HTTPS port is on publicHost, when not ""
// (a WAN link's host side, a local address like loopback's): devices
// across the link and clients here reach it there, and the certificate
// and the streaming URLs name it.
func (r *runner) startHubOn(ctx context.Context, name, bin, dir, publicHost string, pprof, defaults bool, extra ...string) (*hub, error) {
	h := &hub{dir: dir}
	var err error
	if h.httpAddr, err = freePort(); err != nil {
		return nil, err
	}
	if publicHost != "" {
		_, port, _ := net.SplitHostPort(h.httpAddr)
		h.httpAddr = net.JoinHostPort(publicHost, port)
		extra = append([]string{"--hostname", "127.0.0.1," + publicHost, "--public-url", "https://" + h.httpAddr}, extra...)
	}
	if h.mqttAddr, err = freePort(); err != nil {
		return nil, err
	}
	var env []string
	if pprof {
		if h.pprofAddr, err = freePort(); err != nil {
			return nil, err
		}
		env = append(env, "TETHERBENCH_PPROF="+h.pprofAddr)
	}
	args := []string{"--data", dir, "--listen", h.httpAddr, "--mqtt-listen", h.mqttAddr, "--hostname", "127.0.0.1"}
	if defaults {
		// The authflood load: the hub as shipped, its refusals counted.
		if h.metricsAddr, err = freePort(); err != nil {
			return nil, err
		}
		args = append(args, "--metrics-listen", h.metricsAddr)
	} else {
		// The hub's protective limits are lifted: the harness simulates
		// thousands of devices from one address and measures setup rates
		// far above the per-policy default, which is what it is there to
		// measure.
		args = append(args, "--mqtt-conns-per-source", "0", "--mqtt-conn-rate-per-source", "0",
			"--max-streams-per-device", "0", "--stream-rate", "0", "--stream-rate-per-policy", "0")
	}
	if publicHost != "" && h.metricsAddr == "" {
		// The wanbulk load reads which of its streams crossed a session.
		if h.metricsAddr, err = freePort(); err != nil {
			return nil, err
		}
		args = append(args, "--metrics-listen", h.metricsAddr)
	}
	h.proc, err = r.start(name, env, bin, append(args, extra...)...)
	if err != nil {
		return nil, err
	}
	if err := waitHealthy(ctx, h); err != nil {
		return nil, err
	}
	owner, err := os.ReadFile(filepath.Join(dir, "owner.connstr"))
	if err != nil {
		return nil, err
	}
	// The owner's connection string names the hub's public URL: the
	// service dials the hub itself even where --public-url puts a link
	// in front of it for the device.
	cs, err := sas.ParseConnectionString(strings.TrimSpace(string(owner)))
	if err != nil {
		return nil, fmt.Errorf("the hub's owner.connstr: %w", err)
	}
	cs.HostName = h.httpAddr
	h.owner = cs.String()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = h.tlsConf.Clone()
	// Registering thousands of devices from 16 workers: keep their
	// connections, or every call pays a handshake.
	tr.MaxIdleConnsPerHost = 64
	h.svc, err = service.New(h.owner, service.Options{TLSConfig: h.tlsConf, HTTPClient: &http.Client{Transport: tr, Timeout: time.Minute}})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// waitHealthy polls /healthz, trusting the CA once the hub has written it.
func waitHealthy(ctx context.Context, h *hub) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if h.proc.Exited() {
			return fmt.Errorf("tetherd exited; see %s", h.proc.Log)
		}
		time.Sleep(50 * time.Millisecond)
		pem, err := os.ReadFile(filepath.Join(h.dir, "ca.pem"))
		if err != nil {
			continue
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: conf}}
		resp, err := c.Get("https://" + h.httpAddr + "/healthz")
		c.CloseIdleConnections()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				h.tlsConf = conf
				return nil
			}
		}
	}
	return fmt.Errorf("hub not healthy within 60 s; see %s", h.proc.Log)
}

func (h *hub) env() []string {
	return []string{"TETHER_HUB=" + h.owner, "TETHER_CA=" + filepath.Join(h.dir, "ca.pem")}
}

// registerDevices creates ids on the hub, 16 at a time.
func (h *hub) registerDevices(ctx context.Context, ids []string) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs int
		last error
		ch   = make(chan string)
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ch {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := h.svc.CreateDevice(cctx, id)
				cancel()
				if err != nil {
					mu.Lock()
					errs++
					last = err
					mu.Unlock()
				}
			}
		}()
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		ch <- id
	}
	close(ch)
	wg.Wait()
	if errs > 0 {
		return fmt.Errorf("%d of %d devices not registered, last: %v", errs, len(ids), last)
	}
	return ctx.Err()
}

// rssSampler records the largest RSS of a process while it runs.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	max  int64
}

func sampleRSS(p *bench.Proc) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := p.RSS(); err == nil {
				s.max = max(s.max, v)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Max stops sampling and returns the largest RSS seen, in bytes.
func (s *rssSampler) Max() int64 {
	close(s.stop)
	<-s.done
	return s.max
}

// settledRSS waits d, then returns the smallest of a few RSS readings:
// the least a process needs once the garbage collector has caught up.
func settledRSS(p *bench.Proc, d time.Duration) int64 {
	time.Sleep(d)
	var best int64
	for i := range 5 {
		if v, err := p.RSS(); err == nil && (best == 0 || v < best) {
			best = v
		}
		if i < 4 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	return best
}
