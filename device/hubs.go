package device

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"

	"github.com/tether-io/tether/wire"
)

// hubTarget is one entry of Options.Hubs: where MQTT goes and the TLS
// configuration that verifies it.
type hubTarget struct {
	addr string // a wss:// URL or a host:port, as Client.addr
	tls  *tls.Config
}

// setHubs turns Options.Hubs into targets. The TLS ServerName of each is
// its own host, unless the caller fixed one in Options.TLSConfig: a node
// reached by its own name presents a certificate for that name, as its
// streaming URLs need anyway.
func (c *Client) setHubs(hubs []string, base *tls.Config) error {
	for _, h := range hubs {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			// No port: the transport's own.
			host, port = strings.Trim(h, "[]"), "443"
			if c.transport == TLS {
				port = "8883"
			}
		}
		if host == "" || port == "" {
			return fmt.Errorf("device: hub address %q is not HOST:PORT", h)
		}
		t := hubTarget{tls: c.mqttTLS.Clone()}
		if base == nil || base.ServerName == "" {
			t.tls.ServerName = host
		}
		hp := net.JoinHostPort(host, port)
		if c.transport == WebSocket {
			t.addr = "wss://" + hp + wire.PathMQTTWebSocket
		} else {
			t.addr = hp
		}
		c.hubs = append(c.hubs, t)
	}
	if len(hubs) > 0 && len(c.hubs) == 0 {
		return errors.New("device: Options.Hubs holds no address")
	}
	return nil
}

// connectAny makes one connection attempt: to the connection string's
// hub, or to each of Options.Hubs in a fresh random order until one takes
// the device. Random, so that devices of a lost node spread over the
// others; every one, so that a dead node costs a refused dial and not a
// backoff. It sets c.addr and c.mqttTLS to the hub being tried: connect
// and the dial read them, and attempts never run concurrently (Dial makes
// the first, then keepUp alone makes the others).
func (c *Client) connectAny(ctx context.Context) (*session, error) {
	if len(c.hubs) == 0 {
		return c.connect(ctx)
	}
	var errs []error
	for _, i := range rand.Perm(len(c.hubs)) {
		c.addr, c.mqttTLS = c.hubs[i].addr, c.hubs[i].tls
		s, err := c.connect(ctx)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}
