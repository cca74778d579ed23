package hub

// Tests of the limiter's login back-offs and of the identities they key.

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tether-io/tether/sas"
)

func testCounter(t *testing.T, s *Server, limit string) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.lim.counted.WithLabelValues(limit).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestLoginBackoffPerIdentity: an identity that keeps failing from one
// source is refused there, naming it, before its credentials are looked
// at; the other identities of that source, and the same identity from
// elsewhere, go on as before, and a success resets it.
func TestLoginBackoffPerIdentity(t *testing.T) {
	s := &Server{lim: newLimiter(Limits{AuthFailures: 3}, slog.New(slog.DiscardHandler))}
	l := s.lim
	const nat, elsewhere = "192.0.2.7:1000", "198.51.100.1:1000"
	for i := range 4 {
		if msg, _ := l.refuseLogin("device gone", nat); msg != "" {
			t.Fatalf("attempt %d refused: %s", i, msg)
		}
		l.loginResult("device gone", nat, false)
	}
	msg, wait := l.refuseLogin("device gone", nat)
	if want := "throttled: too many failed logins for device gone; retry in 1s"; msg != want || wait <= 0 || wait > time.Second {
		t.Fatalf("after 4 failures: %q, wait %v; want %q", msg, wait, want)
	}
	// Its neighbours behind the same address, another port each.
	for _, id := range []string{"device good", "policy service", ""} {
		if msg, _ := l.refuseLogin(id, "192.0.2.7:2000"); msg != "" {
			t.Fatalf("%q from the same address refused: %s", id, msg)
		}
	}
	if msg, _ := l.refuseLogin("device gone", elsewhere); msg != "" {
		t.Fatalf("the same device from another address refused: %s", msg)
	}
	if n := testCounter(t, s, limitAuthBackoff); n != 1 {
		t.Fatalf("tether_limited_total{limit=auth_backoff} = %v, want 1", n)
	}
	l.loginResult("device gone", nat, true)
	if msg, _ := l.refuseLogin("device gone", nat); msg != "" {
		t.Fatalf("refused after a success: %s", msg)
	}
}

// TestLoginBackoffPerSource: with the default limits, a flood that names
// a new identity each time from one source is cut off by the source's
// rate (every login from it refused, naming the source), and so is a
// client that keeps knocking with an identity already refused; another
// source goes on.
func TestLoginBackoffPerSource(t *testing.T) {
	s := &Server{lim: newLimiter(Limits{}, slog.New(slog.DiscardHandler))}
	l := s.lim
	allowed := burst(DefaultLimits().AuthFailureRatePerSource)
	const src = "192.0.2.7"
	n := 0
	for ; n < 10*allowed; n++ {
		id := fmt.Sprintf("device random%d", n)
		if msg, _ := l.refuseLogin(id, src+":1"); msg != "" {
			if want := "throttled: too many failed logins from 192.0.2.7; retry in 1s"; msg != want {
				t.Fatalf("refused with %q, want %q", msg, want)
			}
			break
		}
		l.loginResult(id, src+":1", false)
	}
	// The burst passes, one more failure starts the back-off; a second's
	// refill cannot have come in between.
	if n < allowed+1 || n > allowed+2 {
		t.Fatalf("the flood was cut after %d failures, want %d", n, allowed+1)
	}
	if msg, _ := l.refuseLogin("device good", src+":2"); msg == "" {
		t.Fatal("a login from the source in back-off went on")
	}
	if msg, _ := l.refuseLogin("device good", "198.51.100.1:1"); msg != "" {
		t.Fatalf("another source refused: %s", msg)
	}
	if got := testCounter(t, s, limitAuthBackoffSrc); got != 2 {
		t.Fatalf("tether_limited_total{limit=auth_backoff_source} = %v, want 2", got)
	}

	// One identity, knocking on once it is refused.
	const knocker = "203.0.113.9:1"
	for range DefaultLimits().AuthFailures + 1 {
		l.loginResult("device gone", knocker, false)
	}
	for i := 0; ; i++ {
		msg, _ := l.refuseLogin("device gone", knocker)
		if msg == "throttled: too many failed logins from 203.0.113.9; retry in 1s" {
			break
		}
		if msg == "" || i > allowed {
			t.Fatalf("refusal %d of a throttled identity: %q; the source is not cut off", i, msg)
		}
	}
}

// TestLoginIdentities: the identity of a login is the policy its token
// names, even in a token garbled otherwise, or the device's client id;
// made-up names are cut short.
func TestLoginIdentities(t *testing.T) {
	tok, err := sas.New("hub.example", "c2VjcmV0", "service", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 1000)
	for in, want := range map[string]string{
		tok: "policy service",
		strings.Replace(tok, "sig=", "sig=AAAA", 1):                     "policy service",
		"SharedAccessSignature skn=a%20b&sr=x&sig=y&se=1":               "policy a b",
		"SharedAccessSignature sr=x&sig=y&se=1":                         "",
		"SharedAccessSignature sr=x&xskn=service":                       "",
		"SharedAccessSignature skn=&sr=x":                               "",
		"SharedAccessSignature sr=hub.example%2Fdevices%2Fd&sig=y&se=1": "",
		"SharedAccessSignature skn=" + long:                             "policy " + long[:maxIdentityName],
	} {
		if got := policyIdentity(in); got != want {
			t.Errorf("policyIdentity(%.60q) = %.60q, want %.60q", in, got, want)
		}
	}
	if got := deviceIdentity("dev1/mod1"); got != "device dev1/mod1" {
		t.Errorf("deviceIdentity = %q", got)
	}
	if got := deviceIdentity(long); got != "device "+long[:maxIdentityName] {
		t.Errorf("deviceIdentity of a long id = %.60q", got)
	}
	if got := deviceIdentity(""); got != "" {
		t.Errorf("deviceIdentity of no id = %q", got)
	}
}
