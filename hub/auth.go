package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// authenticateDevice decides an MQTT CONNECT. The client id is the device
// id, or deviceId/moduleId; the password is a SAS token whose sr names
// that device, signed with one of its keys or with a policy holding
// DeviceConnect. A device registered as selfSigned or certificateAuthority
// proves itself with its TLS client certificate instead (certs, see
// x509.go), and no token lets it in. The error text goes to the log only:
// the device learns nothing but "not authorized", whatever failed. On
// success the broker keeps the session's credential (keys.go).
func (s *Server) authenticateDevice(clientID, username string, password []byte, remote string, certs []*x509.Certificate) (string, error) {
	cred := credential{epoch: s.keys.epoch.Load()} // before the registry is read
	err := s.checkDevice(clientID, username, string(password), certs, &cred)
	s.lim.loginResult(deviceIdentity(clientID), remote, err == nil) // back-offs (limits.go)
	if err != nil {
		s.metrics.deviceAuth.Inc()
		s.authLog.log(s.log, slog.LevelInfo, "device authentication failed", "device", clientID, "remote", remote, "why", err)
	}
	return cred.String(), err
}

func (s *Server) checkDevice(clientID, username, password string, certs []*x509.Certificate, cred *credential) error {
	deviceID, module, _ := strings.Cut(clientID, "/")
	if deviceID == "" {
		return errors.New("empty client id")
	}
	// Username is {host}/{clientId}/?api-version=...; only the id part is
	// checked, since the host part varies with how the device was pointed
	// at the hub.
	if _, rest, ok := strings.Cut(username, "/"); !ok || !strings.HasPrefix(rest, clientID+"/") {
		return errors.New("username does not name the client id")
	}
	var tok sas.Token
	if len(certs) == 0 {
		// Without a certificate only a token can succeed: refuse a bad
		// one before reading storage.
		var err error
		if tok, err = s.deviceToken(password, deviceID, module); err != nil {
			return err
		}
	}
	ctx, cancel := ctxTimeout(context.Background())
	defer cancel()
	dev, err := s.reg.Record(ctx, deviceID)
	if err != nil {
		if len(certs) == 0 {
			s.burn(tok) // unknown device: cost what a wrong key costs
		}
		return err
	}
	if dev.Status == wire.StatusDisabled {
		return errors.New("device is disabled")
	}
	if wire.IsX509(dev.Authentication.Type) {
		cred.kind = credCert
		return s.checkDeviceCert(ctx, dev, certs)
	}
	if len(certs) > 0 {
		// A key device's certificate proves nothing; its token must.
		if tok, err = s.deviceToken(password, deviceID, module); err != nil {
			return err
		}
	}
	if tok.KeyName != "" {
		p, err := s.reg.Policy(ctx, tok.KeyName)
		if err != nil {
			s.burn(tok)
			return err
		}
		if !p.Has(registry.DeviceConnect) {
			return errors.New("policy lacks DeviceConnect")
		}
		cred.signedBy(tok, dev, &p)
		return verifyEither(tok, p.PrimaryKey, p.SecondaryKey)
	}
	if dev.Authentication.SymmetricKey == nil {
		return errors.New("device has no symmetric key")
	}
	k := dev.Authentication.SymmetricKey
	cred.signedBy(tok, dev, nil)
	return verifyEither(tok, k.PrimaryKey, k.SecondaryKey)
}

// deviceToken parses a device's SAS token and checks that its sr names
// this hub and that device (or module).
func (s *Server) deviceToken(password, deviceID, module string) (sas.Token, error) {
	tok, err := sas.ParseToken(password)
	if err != nil {
		return sas.Token{}, err
	}
	path := "/devices/" + deviceID
	if module != "" {
		path += "/modules/" + module
	}
	if !tok.ResourceIs(s.hostNames(), path) {
		return sas.Token{}, errors.New("token names another resource")
	}
	return tok, nil
}
