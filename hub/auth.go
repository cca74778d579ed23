package hub

import (
	"context"
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
// DeviceConnect. The error text goes to the log only: the device learns
// nothing but "not authorized", whatever failed.
func (s *Server) authenticateDevice(clientID, username string, password []byte, remote string) error {
	err := s.checkDevice(clientID, username, string(password))
	if err != nil {
		s.metrics.deviceAuth.Inc()
		s.authLog.log(s.log, slog.LevelInfo, "device authentication failed", "device", clientID, "remote", remote, "why", err)
	}
	return err
}

func (s *Server) checkDevice(clientID, username, password string) error {
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
	tok, err := sas.ParseToken(password)
	if err != nil {
		return err
	}
	path := "/devices/" + deviceID
	if module != "" {
		path += "/modules/" + module
	}
	if !tok.ResourceIs(s.hostNames(), path) {
		return errors.New("token names another resource")
	}
	ctx, cancel := ctxTimeout(context.Background())
	defer cancel()
	dev, err := s.reg.Get(ctx, deviceID)
	if err != nil {
		return err
	}
	if dev.Status == wire.StatusDisabled {
		return errors.New("device is disabled")
	}
	if tok.KeyName != "" {
		p, err := s.reg.Policy(ctx, tok.KeyName)
		if err != nil {
			return err
		}
		if !p.Has(registry.DeviceConnect) {
			return errors.New("policy lacks DeviceConnect")
		}
		return verifyEither(tok, p.PrimaryKey, p.SecondaryKey)
	}
	if dev.Authentication.SymmetricKey == nil {
		return errors.New("device has no symmetric key")
	}
	k := dev.Authentication.SymmetricKey
	return verifyEither(tok, k.PrimaryKey, k.SecondaryKey)
}
