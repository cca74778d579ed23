package e2e

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// serveRejections answers every stream request on dc as tether agent
// does with an allow list of "refused" (a port nothing listens on) and
// "slow" (a dial that runs out of time): any other name is not allowed,
// and an allowed one whose target cannot be reached is rejected with the
// dial's error.
func serveRejections(t *testing.T, dc *device.Client) {
	dead := deadAddr(t)
	go func() {
		for {
			req, err := dc.Accept(context.Background())
			if err != nil {
				return
			}
			switch req.Name {
			case "refused", "slow":
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if req.Name == "slow" {
					// A deadline already past: the dial's own timeout, at once.
					cancel()
					ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
				}
				var d net.Dialer
				conn, err := d.DialContext(ctx, "tcp", dead)
				cancel()
				if err == nil {
					conn.Close()
					t.Errorf("dialing %s succeeded", dead)
					_ = req.Reject()
					continue
				}
				if err := req.RejectUnreachable(err); err != nil {
					t.Errorf("RejectUnreachable: %v", err)
				}
			default:
				if err := req.Reject(); err != nil {
					t.Errorf("Reject: %v", err)
				}
			}
		}
	}()
}

// The service tells a name the device does not serve from a target the
// device cannot reach, through a real hub.
func TestRejectionReasons(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	serveRejections(t, h.connectDevice(t, h.addDevice(t, "dev1"), device.WebSocket))
	svc := h.service(t)
	for _, tc := range []struct {
		stream string
		status int
		want   error
		not    error
	}{
		{"nope", wire.AnswerNotAllowed, service.ErrNotAllowed, service.ErrTargetUnreachable},
		{"refused", wire.AnswerTargetRefused, service.ErrTargetUnreachable, service.ErrNotAllowed},
		{"slow", wire.AnswerTargetTimeout, service.ErrTargetUnreachable, service.ErrNotAllowed},
	} {
		_, err := svc.OpenStream(context.Background(), "dev1", tc.stream)
		var re *service.RejectError
		if !errors.As(err, &re) || re.Status != tc.status || re.Reason == "" {
			t.Fatalf("%s: OpenStream = %v, want a RejectError with status %d and a reason", tc.stream, err, tc.status)
		}
		if !errors.Is(err, tc.want) || errors.Is(err, tc.not) || !errors.Is(err, service.ErrRejected) {
			t.Errorf("%s: %v: want errors.Is %v and ErrRejected, not %v", tc.stream, err, tc.want, tc.not)
		}
	}
}

// The POST, Azure's form of the request, gets what Azure answers (200,
// is-accepted False, neither URL nor token) and the device's status in
// Tether's own header only.
func TestRejectionPOST(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{})
	serveRejections(t, h.connectDevice(t, h.addDevice(t, "dev1"), device.TLS))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: h.TLS}, Timeout: 30 * time.Second}
	token := h.ownerToken(t, time.Hour)
	for stream, status := range map[string]int{
		"nope":    wire.AnswerNotAllowed,
		"refused": wire.AnswerTargetRefused,
		"slow":    wire.AnswerTargetTimeout,
	} {
		req, _ := http.NewRequest(http.MethodPost, "https://"+h.Addr+"/twins/dev1/streams/"+stream+"?api-version=2018-06-30", nil)
		req.Header.Set("Authorization", token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get(wire.HeaderIsAccepted) != "False" ||
			resp.Header.Get(wire.HeaderURL) != "" || resp.Header.Get(wire.HeaderAuthToken) != "" {
			t.Errorf("%s: HTTP %d %v, want Azure's 200 with is-accepted False alone", stream, resp.StatusCode, resp.Header)
		}
		if got := resp.Header.Get(wire.HeaderDeviceStatus); got != strconv.Itoa(status) {
			t.Errorf("%s: %s = %q, want %d", stream, wire.HeaderDeviceStatus, got, status)
		}
	}
}
