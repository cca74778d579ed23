package e2e

// Devices behind one NAT: many honest devices share a source address, and
// one failing among them must not cost the others their logins.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-io/tether/hub"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// TestFailingDeviceBehindNAT: a device with a wrong key that keeps
// retrying from 127.0.0.1, and a script with a wrong policy key beside it,
// are throttled by name (CONNACK 3 and the hub's log line; 429
// ThrottlingException whose message names the policy), while a good device
// and a good policy key from the same address go on working, and the
// throttled device itself connects from another address.
func TestFailingDeviceBehindNAT(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	// Three free failures keep the test short; the source's own rate is
	// the default, which these few failures stay within, as an agent
	// retrying every few seconds does.
	h := startHub(t, hubOptions{logTo: &log, limits: hub.Limits{AuthFailures: 3}})
	goodStr := h.addDevice(t, "good")
	badStr := h.addDevice(t, "bad")
	cs, _ := sas.ParseConnectionString(badStr)
	wrong, _ := sas.New(cs.Resource(), randomKey(), "", time.Now().Add(time.Hour))
	const nat = "127.0.0.1"

	for i := range 4 {
		if code := connackFrom(t, h, nat, "bad", wrong); code != 5 {
			t.Fatalf("failure %d: CONNACK %d, want 5", i+1, code)
		}
	}
	throttledAt := -1
	for i := range 5 {
		if code := connackFrom(t, h, nat, "bad", wrong); code == 3 {
			throttledAt = i
			break
		} else if code != 5 {
			t.Fatalf("retry %d: CONNACK %d, want 3 (or 5 where a back-off ended)", i, code)
		}
	}
	if throttledAt < 0 {
		t.Fatal("the failing device was never throttled")
	}
	if want := "throttled: too many failed logins for device bad; retry in "; !strings.Contains(log.String(), want) {
		t.Fatalf("no %q in the hub's log", want)
	}

	// A script beside it with a wrong key for the service policy.
	svcTok := h.policyToken(t, "service", randomKey())
	for i := range 4 {
		if resp := getFrom(t, h, nat, "/devices/good", svcTok); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad policy key %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp := getFrom(t, h, nat, "/devices/good", svcTok)
	var body struct{ Message string }
	if err := json.Unmarshal(resp.body, &body); err != nil {
		t.Fatalf("429 body %q: %v", resp.body, err)
	}
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get(wire.HeaderErrorCode) != "ThrottlingException" ||
		resp.Header.Get("Retry-After") == "" || !strings.Contains(body.Message, "throttled: too many failed logins for policy service; retry in ") {
		t.Fatalf("the bad policy key once throttled: %d %v %q", resp.StatusCode, resp.Header, resp.body)
	}

	// Its neighbours behind the same address are served.
	goodTok := deviceToken(t, goodStr)
	if code := connackFrom(t, h, nat, "good", goodTok); code != 0 {
		t.Fatalf("a good device behind the same address: CONNACK %d, want 0", code)
	}
	if resp := getFrom(t, h, nat, "/devices/good", h.ownerToken(t, time.Hour)); resp.StatusCode != http.StatusOK {
		t.Fatalf("a good policy key from the same address: %d %q, want 200", resp.StatusCode, resp.body)
	}
	// The throttled device with its right key, from another address.
	if code := connackFrom(t, h, "127.0.0.2", "bad", deviceToken(t, badStr)); code != 0 {
		t.Fatalf("the throttled device from another address: CONNACK %d, want 0", code)
	}
	if got := h.metric(t, "tether_limited_total", `limit="auth_backoff"`); got < 2 {
		t.Fatalf("tether_limited_total{limit=auth_backoff} = %v, want 2 or more", got)
	}
	if got := h.metric(t, "tether_limited_total", `limit="auth_backoff_source"`); got != 0 {
		t.Fatalf("tether_limited_total{limit=auth_backoff_source} = %v: the address itself was backed off", got)
	}
}

// TestRandomIdentityFloodIsCut: failed logins that name a new device each
// time, from one address and faster than its rate, are cut off by the
// address's back-off (the per-identity one never sees a name twice):
// CONNACK 3, then connections reset before any TLS handshake. Another
// address connects meanwhile. Default limits.
func TestRandomIdentityFloodIsCut(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	goodStr := h.addDevice(t, "good")
	const attacker = "127.0.0.3"
	flood := make([][]byte, 3000)
	for i := range flood {
		flood[i] = connectPacket(t, h, sas.ConnectionString{HostName: h.Addr, DeviceID: fmt.Sprintf("random%04d", i), SharedAccessKey: randomKey()}.String())
	}
	var (
		next, attempts, refused, cut atomic.Int32
		wg                           sync.WaitGroup
	)
	// Enough workers to stay well past the source's rate on a slow
	// machine; they stop once the hub closes connections before TLS.
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; cut.Load() == 0 && i < len(flood); i = int(next.Add(1)) - 1 {
				attempts.Add(1)
				c, code, err := holdConnack(h, attacker, flood[i])
				switch {
				case err != nil:
					cut.Add(1) // closed before or during the handshake
				case code == 3:
					refused.Add(1)
				case code != 5:
					t.Errorf("a random identity: CONNACK %d", code)
				}
				if c != nil {
					c.Close()
				}
			}
		})
	}
	wg.Wait()
	if cut.Load() == 0 {
		t.Fatalf("%d failing logins from one address were never cut off before TLS (%d CONNACK 3)", attempts.Load(), refused.Load())
	}
	if got := h.metric(t, "tether_limited_total", `limit="auth_backoff_source"`); got < 1 {
		t.Fatalf("tether_limited_total{limit=auth_backoff_source} = %v", got)
	}
	if code := connackFrom(t, h, "127.0.0.4", "good", deviceToken(t, goodStr)); code != 0 {
		t.Fatalf("another address during the flood's back-off: CONNACK %d, want 0", code)
	}
}

// TestThousandDevicesBehindOneAddress: with the default limits, 1,000
// devices from one address all connect and stay connected, and all come
// back after the hub restarts on the same data folder.
func TestThousandDevicesBehindOneAddress(t *testing.T) {
	t.Parallel()
	const n, nat = 1000, "127.0.0.5"
	h := startHub(t, hubOptions{})
	ctx := context.Background()
	keys := make([]string, n)
	for i := range n {
		d, _, err := h.Registry.Put(ctx, wire.Device{DeviceID: fmt.Sprintf("nat%04d", i)}, "")
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = d.Authentication.SymmetricKey.PrimaryKey
	}
	connectAll := func(h *testHub, when string) []net.Conn {
		connects := make([][]byte, n)
		for i := range n {
			connects[i] = connectPacket(t, h, sas.ConnectionString{HostName: h.Addr, DeviceID: fmt.Sprintf("nat%04d", i), SharedAccessKey: keys[i]}.String())
		}
		conns := make([]net.Conn, n)
		var (
			wg       sync.WaitGroup
			next     atomic.Int32
			mu       sync.Mutex
			refused  int
			firstErr string
		)
		for range 32 {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					c, code, err := holdConnack(h, nat, connects[i])
					if err != nil || code != 0 {
						mu.Lock()
						if refused++; refused == 1 {
							firstErr = fmt.Sprintf("device %d: CONNACK %d, %v", i+1, code, err)
						}
						mu.Unlock()
						continue
					}
					conns[i] = c
				}
			})
		}
		wg.Wait()
		if refused > 0 {
			t.Fatalf("%s: %d of %d devices from one address not connected (the first: %s)", when, refused, n, firstErr)
		}
		return conns
	}
	before := connectAll(h, "first start")
	h.Close()
	for _, c := range before {
		c.Close()
	}
	h = startHub(t, hubOptions{dir: h.Dir})
	after := connectAll(h, "after a restart")
	for _, c := range after {
		c.Close()
	}
}

// holdConnack connects over MQTT/TLS from ip, sends connect and reads the
// CONNACK; the connection stays open for the caller to close.
func holdConnack(h *testHub, ip string, connect []byte) (net.Conn, byte, error) {
	c, err := tls.DialWithDialer(dialerFrom(ip), "tcp", h.MQTTAddr, h.TLS)
	if err != nil {
		return nil, 0, err
	}
	c.SetDeadline(time.Now().Add(hostileWait))
	ack := make([]byte, 4)
	if _, err := c.Write(connect); err != nil {
		c.Close()
		return nil, 0, err
	}
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 {
		c.Close()
		return nil, 0, fmt.Errorf("CONNACK %x: %v", ack, err)
	}
	c.SetDeadline(time.Time{})
	return c, ack[3], nil
}

// randomKey is a key nobody holds.
func randomKey() string {
	k := make([]byte, 32)
	rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

// deviceToken signs a token with a device connection string's key.
func deviceToken(t *testing.T, connStr string) string {
	t.Helper()
	cs, err := sas.ParseConnectionString(connStr)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cs.Token(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// policyToken signs a service token for policy with key.
func (h *testHub) policyToken(t *testing.T, policy, key string) string {
	t.Helper()
	tok, err := sas.New(h.Addr, key, policy, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type answer struct {
	*http.Response
	body []byte
}

// getFrom makes a REST GET from ip with a token.
func getFrom(t *testing.T, h *testHub, ip, path, token string) answer {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS, DialContext: dialerFrom(ip).DialContext}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+h.Addr+path+"?api-version=2020-09-30", nil)
	req.Header.Set("Authorization", token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp, b}
}
