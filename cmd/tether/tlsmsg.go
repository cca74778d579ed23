package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tether-io/tether/device"
	"github.com/tether-io/tether/internal/certerr"
	"github.com/tether-io/tether/sas"
)

// The SDKs word certificate failures in their own terms (Options fields);
// these say the same causes in the CLI's: its flags, its environment and
// tetherd's.

// explainCert is the one line for a hub certificate that failed
// verification: what is wrong with it, and the fix, which differs by
// cause and is made on different machines. hub names the hub as the user
// gave it. err is returned as is when it is no certificate failure.
func explainCert(err error, hub string) error {
	f, ok := certerr.Find(err)
	if !ok {
		return err
	}
	switch f.Cause {
	case certerr.UnknownAuthority:
		return fmt.Errorf("certificate not trusted: pass --ca FILE (or set TETHER_CA) with the CA of hub %s, the ca.pem in tetherd's data folder (its certificate was %s)", hub, strings.TrimPrefix(f.String(), "certificate not trusted: "))
	case certerr.WrongName:
		return fmt.Errorf("hub %s: %s: connect with one of those names (the HostName of the connection string), or add %q to tetherd's --hostname", hub, f, f.Host)
	case certerr.Expired, certerr.NotYetValid:
		return fmt.Errorf("hub %s: %s: tetherd renews a certificate of its own when it starts, one given with --tls-cert must be renewed by its issuer; or this machine's clock is wrong", hub, f)
	}
	return fmt.Errorf("hub %s: %s", hub, f)
}

// explainAgentDial words the agent's failure to connect with its flags,
// where the SDK's error names the SDK's fields.
func explainAgentDial(err error, cfg *agentConfig) error {
	if errors.Is(err, device.ErrNoCertificate) {
		return errors.New("the connection string says x509=true: give the device's certificate and its key with --cert FILE --key FILE (or TETHER_CERT and TETHER_KEY, or cert and key in the --config file)")
	}
	hub := strings.Join(cfg.Hubs, ", ")
	if hub == "" {
		if cs, perr := sas.ParseConnectionString(cfg.Device); perr == nil {
			hub = cs.HostName
		}
	}
	return explainCert(err, hub)
}

// loadAgentCert reads --cert and --key and checks what the hub would
// refuse the certificate for without looking it up: a subject CN that is
// not the device ID, a validity that does not hold now. Said here, the
// error names the file; said by the hub, it is "not authorized".
func loadAgentCert(cfg *agentConfig) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("--cert/--key: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("--cert %s: %w", cfg.Cert, err)
	}
	cs, err := sas.ParseConnectionString(cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("the device's connection string: %w", err)
	}
	now := time.Now()
	switch {
	case leaf.Subject.CommonName != cs.DeviceID:
		return nil, fmt.Errorf("--cert %s: the certificate's subject CN is %q, not the device ID %q of the connection string: the hub would refuse it", cfg.Cert, leaf.Subject.CommonName, cs.DeviceID)
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("--cert %s: the certificate expired at %s (this machine's clock says %s)", cfg.Cert, leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("--cert %s: the certificate is not valid before %s (this machine's clock says %s)", cfg.Cert, leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return &cert, nil
}
