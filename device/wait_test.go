package device

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/device/devicetest"
)

// waitingOptions are Options with WaitForHub for a hub at tlsAddr that
// does not exist yet; each failed dial is sent on the returned channel.
func waitingOptions(t *testing.T, tr Transport, tlsAddr string) (Options, *syncBuffer, chan error) {
	log, logs := testLogger(t)
	failed := make(chan error, 64)
	return Options{
		TLSConfig:   devicetest.ClientTLS(),
		Transport:   tr,
		MQTTAddress: tlsAddr,
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  100 * time.Millisecond,
		Logger:      log,
		WaitForHub:  true,
		dial: func(ctx context.Context, real func(context.Context) (net.Conn, error)) (net.Conn, error) {
			c, err := real(ctx)
			if err != nil {
				select {
				case failed <- err:
				default:
				}
			}
			return c, err
		},
	}, logs, failed
}

// TestDialWaitsForHub: with WaitForHub a device started before its hub
// keeps trying, says why in its log, and connects once the hub is up.
func TestDialWaitsForHub(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr Transport) {
		key := devicetest.NewKey()
		tlsAddr, httpAddr := devicetest.FreeAddr(t), devicetest.FreeAddr(t)
		opts, logs, failed := waitingOptions(t, tr, tlsAddr)
		ctx, cancel := context.WithTimeout(context.Background(), devicetest.Timeout)
		defer cancel()
		type result struct {
			c   *Client
			err error
		}
		done := make(chan result, 1)
		go func() {
			c, err := Dial(ctx, "HostName="+httpAddr+";DeviceId="+devicetest.DeviceID+";SharedAccessKey="+key, opts)
			done <- result{c, err}
		}()
		for range 3 { // the first attempt and two more: it waits
			select {
			case <-failed:
			case r := <-done:
				t.Fatalf("Dial returned before the hub was up: %v", r.err)
			}
		}
		b := devicetest.StartHub(t, key, tlsAddr, httpAddr)
		r := <-done
		if r.err != nil {
			t.Fatalf("Dial: %v", r.err)
		}
		defer r.c.Close()
		b.NextConnect()
		out := logs.String()
		if !strings.Contains(out, "cannot connect to the hub yet; retrying") || !strings.Contains(out, "cannot reach the hub at") {
			t.Errorf("the log does not say why the device waits:\n%s", out)
		}
	})
}

// TestDialWaitForHubStops: waiting is for a hub that cannot be reached. A
// hub that refuses the device's key, a certificate that is not trusted,
// and the caller giving up end Dial at once.
func TestDialWaitForHubStops(t *testing.T) {
	key := devicetest.NewKey()
	b := devicetest.StartHub(t, key, "127.0.0.1:0", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), devicetest.Timeout)
	defer cancel()
	forEachTransport(t, func(t *testing.T, tr Transport) {
		t.Run("unauthorized", func(t *testing.T) {
			opts, _, _ := waitingOptions(t, tr, b.TLSAddr)
			if _, err := Dial(ctx, b.ConnStr(devicetest.NewKey()), opts); !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
		})
		t.Run("untrusted certificate", func(t *testing.T) {
			opts, _, _ := waitingOptions(t, tr, b.TLSAddr)
			opts.TLSConfig = &tls.Config{RootCAs: x509.NewCertPool()}
			if _, err := Dial(ctx, b.ConnStr(key), opts); !untrusted(err) {
				t.Fatalf("err = %v, want the certificate's verification error", err)
			}
		})
	})
	t.Run("given up", func(t *testing.T) {
		dead := devicetest.FreeAddr(t)
		opts, _, failed := waitingOptions(t, TLS, dead)
		cctx, ccancel := context.WithCancel(ctx)
		go func() {
			<-failed
			ccancel()
		}()
		_, err := Dial(cctx, "HostName="+devicetest.FreeAddr(t)+";DeviceId=dev1;SharedAccessKey="+key, opts)
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), dead) {
			t.Fatalf("err = %v, want one naming %s and context.Canceled", err, dead)
		}
	})
}
