package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tether-io/tether/bench"
)

// WANBulkFig is the wanbulk load (11): one stream's bulk rate across a
// packet-level WAN link (bench.WANLink) between the agent and the hub,
// beside a plain TCP and a TLS connection across the same link. Through
// the delaying relay of load 8 each TCP connection ends at the relay, and
// a stream's window never has to cover the link's bandwidth-delay
// product; across this link it does.
type WANBulkFig struct {
	DelayMs  float64 // each way
	RateMbit float64 // the bottleneck's
	QueueKiB float64 // the bottleneck's queue, beyond which it drops
	// Mbit is direction ("forward": client → device, "reverse") → path
	// (tcp, tls, tether, tether-nosessions) → Mbit/s; NaN when it failed.
	Mbit    map[string]map[string]float64
	Dropped int64 // packets the bottleneck dropped during the load
	// OnSession is path → whether each direction's stream crossed the
	// device's data session (the hub's tether_mux_streams_total{kind=
	// "device"} counted it): a device's first stream opens the session
	// beside a connection of its own, so the load opens one before.
	OnSession map[string][]bool
	Errors    []string
}

// The paths of the wanbulk load.
const (
	wbTCP        = "tcp"
	wbTLS        = "tls"
	wbTether     = "tether"
	wbNoSessions = "tether-nosessions"
)

// measureWANBulk runs the wanbulk load: the agent and the target in the
// peer namespace of a WAN link, the hub, the forwarder and the load
// generator in this one, as load 8 lays them out (the device's leg
// crosses the WAN, the service is next to the hub). Without root or
// /dev/net/tun it says so and measures nothing.
func (r *runner) measureWANBulk(ctx context.Context) error {
	c := r.cfg
	link, err := bench.StartWANLink(bench.WANLinkConfig{Delay: c.wanHold, Rate: c.wanRate})
	if err != nil {
		r.logf("wanbulk: no WAN link (it needs root and /dev/net/tun): %v; not measured", err)
		return nil
	}
	defer link.Close()
	lc := link.Config()
	fig := &WANBulkFig{DelayMs: ms(lc.Delay), RateMbit: lc.Rate / 1e6, QueueKiB: float64(lc.Queue) / 1024,
		Mbit: map[string]map[string]float64{"forward": {}, "reverse": {}}, OnSession: map[string][]bool{}}
	r.logf("wanbulk: link %s ↔ %s (peer namespace), %v each way, %.0f Mbit/s, queue %.0f KiB",
		link.HostAddr, link.PeerAddr, lc.Delay, fig.RateMbit, fig.QueueKiB)

	// Targets listen on every address of the peer namespace: the agent
	// reaches the plain one on its loopback, the baselines across the link.
	var target, tlsTarget *bench.Target
	if err := link.InPeer(func() (err error) {
		target, err = bench.StartTarget("0.0.0.0:0")
		return err
	}); err != nil {
		return err
	}
	defer target.Close()
	_, port, _ := net.SplitHostPort(target.Addr())
	dir := filepath.Join(r.out, "data", "wanbulk")
	t, err := r.startTunnelWith(ctx, tunnelConfig{suffix: "-wanbulk", dir: dir, fresh: true, link: link, target: "127.0.0.1:" + port})
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			r.stopTunnel(t)
		}
	}()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil {
		return err
	}
	if err := link.InPeer(func() (err error) {
		tlsTarget, err = bench.StartTargetTLS("0.0.0.0:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		return err
	}); err != nil {
		return err
	}
	defer tlsTarget.Close()
	_, tlsPort, _ := net.SplitHostPort(tlsTarget.Addr())
	clientTLS := t.hub.tlsConf.Clone()
	clientTLS.ServerName = "127.0.0.1"
	tlsDialer := &tls.Dialer{Config: clientTLS}
	tlsAddr := net.JoinHostPort(link.PeerAddr.String(), tlsPort)

	paths := []struct {
		name   string
		dial   bench.DialFunc
		target *bench.Target
	}{
		{wbTCP, bench.TCPDialer(net.JoinHostPort(link.PeerAddr.String(), port)), target},
		{wbTLS, func(ctx context.Context) (net.Conn, error) { return tlsDialer.DialContext(ctx, "tcp", tlsAddr) }, tlsTarget},
		{wbTether, t.forwardDial, target},
	}
	drops0 := link.Dropped.Load()
	bulk := func(dir, path string, dial bench.DialFunc, tg *bench.Target) {
		tethers := path == wbTether || path == wbNoSessions
		var streams0 float64
		if tethers {
			// The device's first stream after a while opens its data
			// session beside it: open one first, and count the next.
			if _, err := bench.FirstByte(ctx, dial); err != nil {
				fig.Errors = append(fig.Errors, fmt.Sprintf("%s %s: the stream before: %v", dir, path, err))
			}
			streams0 = deviceMuxStreams(t.hub.metricsAddr)
		}
		gbps, err := bench.Bulk(ctx, dial, tg, dir == "reverse", c.wanBulkWarm, c.wanBulkN, nil)
		if tethers {
			fig.OnSession[path] = append(fig.OnSession[path], deviceMuxStreams(t.hub.metricsAddr) > streams0)
		}
		if err != nil {
			fig.Errors = append(fig.Errors, fmt.Sprintf("%s %s: %v", dir, path, err))
			gbps = math.NaN()
		}
		fig.Mbit[dir][path] = gbps * 1e3
		r.logf("wanbulk: %s %s: %.1f Mbit/s (on the device's session: %v)", dir, path, gbps*1e3, fig.OnSession[path])
	}
	for _, dir := range []string{"forward", "reverse"} {
		for _, p := range paths {
			bulk(dir, p.name, p.dial, p.target)
		}
	}
	r.stopTunnel(t)
	stopped = true
	if t, err = r.startTunnelWith(ctx, tunnelConfig{suffix: "-wanbulk-nosessions", dir: dir, link: link, target: "127.0.0.1:" + port, noSessions: true}); err != nil {
		return err
	}
	stopped = false
	for _, dir := range []string{"forward", "reverse"} {
		bulk(dir, wbNoSessions, t.forwardDial, target)
	}
	fig.Dropped = link.Dropped.Load() - drops0
	r.res.WANBulk = fig
	return nil
}

// wanBulkRows are the rows of load 11: the plain TCP baseline is the
// direct column, TLS the limit column.
func (r *runner) wanBulkRows() []row {
	w := r.res.WANBulk
	if w == nil {
		return nil
	}
	link := fmt.Sprintf("%.0f ms RTT, %.0f Mbit/s link", 2*w.DelayMs, w.RateMbit)
	var rows []row
	var perTCP []string
	for i, d := range []struct{ key, name string }{{"forward", "client → device"}, {"reverse", "device → client"}} {
		m := w.Mbit[d.key]
		// A stream with sessions on that missed the device's session is
		// not the figure the row names: say so in the cell.
		tether := f(m[wbTether], 1)
		if on := w.OnSession[wbTether]; i < len(on) && !on[i] {
			tether += " (not on the device's session)"
		}
		rows = append(rows,
			row{Figure: "11. WAN bulk, one stream, " + d.name + ", " + link + " (direct: plain TCP, limit: TLS)", Unit: "Mbit/s",
				Direct: f(m[wbTCP], 1), Limit: f(m[wbTLS], 1), Tether: tether,
				Ratio: ratio(m[wbTether], m[wbTLS]), Target: "≥ 0.8× limit", Met: met(m[wbTether] >= 0.8*m[wbTLS])},
			row{Figure: "11. WAN bulk, one stream, " + d.name + ", " + link + ", without sessions (TETHER_SESSIONS=0)", Unit: "Mbit/s",
				Direct: f(m[wbTCP], 1), Limit: f(m[wbTLS], 1), Tether: f(m[wbNoSessions], 1),
				Ratio: ratio(m[wbNoSessions], m[wbTLS])},
		)
		perTCP = append(perTCP, f(m[wbTether]/m[wbTCP], 2)+" / "+f(m[wbNoSessions]/m[wbTCP], 2))
	}
	rows = append(rows, row{Figure: "11. WAN bulk, Tether ÷ plain TCP, with / without sessions: client → device; device → client", Unit: "×",
		Direct: "–", Limit: "–", Tether: perTCP[0] + "; " + perTCP[1], Ratio: "–"})
	return rows
}

// deviceMuxStreams reads the hub's count of streams opened on devices'
// data sessions; 0 when it cannot.
func deviceMuxStreams(metricsAddr string) float64 {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `tether_mux_streams_total{kind="device"} `); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return n
		}
	}
	return 0
}
