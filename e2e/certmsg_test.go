package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/service"
)

// A hub reached by a name its certificate does not hold: both SDKs say
// so, with the names it holds, rather than call it a CA problem; and they
// name their own Options, never a CLI flag.
func TestCertificateNameSDK(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOptions{}) // its certificate holds 127.0.0.1 only
	devStr := h.addDevice(t, "dev1")
	port := h.Addr[strings.LastIndexByte(h.Addr, ':'):]
	byName := func(connStr string) string {
		cs, err := sas.ParseConnectionString(connStr)
		if err != nil {
			t.Fatal(err)
		}
		cs.HostName = "localhost" + port
		return cs.String()
	}
	const names = `name "localhost" not in the certificate, which holds 127.0.0.1`

	svc, err := service.New(byName(h.Owner), svcOptions(service.Options{TLSConfig: h.TLS}))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	_, err = svc.GetDevice(context.Background(), "dev1")
	checkCertError(t, "service", err, names, "Options.TLSConfig")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = device.Dial(ctx, byName(devStr), devOptions(device.Options{TLSConfig: h.TLS, Logger: testLogger(t)}))
	checkCertError(t, "device", err, names, "Options.TLSConfig")

	// A CA the client does not trust is told apart.
	svc2, err := service.New(h.Owner, svcOptions(service.Options{TLSConfig: &tls.Config{}}))
	if err != nil {
		t.Fatal(err)
	}
	defer svc2.Close()
	_, err = svc2.GetDevice(context.Background(), "dev1")
	checkCertError(t, "service, unknown CA", err, "certificate not trusted: issued by ", "Options.TLSConfig.RootCAs")
}

func checkCertError(t *testing.T, who string, err error, says ...string) {
	t.Helper()
	var cve *tls.CertificateVerificationError
	if err == nil || !errors.As(err, &cve) {
		t.Fatalf("%s: err = %v, want a certificate failure", who, err)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: %q lacks %q", who, err, s)
		}
	}
	for _, flag := range []string{"--ca", "--hostname", "--cert", "TETHER_"} {
		if strings.Contains(err.Error(), flag) {
			t.Errorf("%s: the SDK's error %q names a CLI setting (%s)", who, err, flag)
		}
	}
}
