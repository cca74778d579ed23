package service

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/tether-io/tether/wire"
)

// ErrCertificateNotFound means the hub holds no CA certificate of that
// name.
var ErrCertificateNotFound = errors.New("certificate not found")

// CreateDeviceX509 registers a device that authenticates with a TLS client
// certificate of its own (authentication type selfSigned): thumbprints are
// the SHA-256 fingerprints, in hex, of its certificate and optionally of a
// second one for a rollover. Case and colons do not matter. The device's
// certificate must carry its ID as subject CN.
func (c *Client) CreateDeviceX509(ctx context.Context, id string, thumbprints ...string) (*wire.Device, error) {
	if id == "" {
		return nil, errNoID
	}
	if len(thumbprints) == 0 || len(thumbprints) > 2 {
		return nil, fmt.Errorf("service: a selfSigned device takes one or two thumbprints, not %d", len(thumbprints))
	}
	tp := make([]*string, 2)
	for i, t := range thumbprints {
		n, err := wire.NormalizeThumbprint(t)
		if err != nil {
			return nil, fmt.Errorf("service: thumbprint %d: %w", i+1, err)
		}
		tp[i] = &n
	}
	return c.createDevice(ctx, id, wire.Authentication{
		Type:           wire.AuthSelfSigned,
		X509Thumbprint: &wire.X509Thumbprint{PrimaryThumbprint: tp[0], SecondaryThumbprint: tp[1]},
	})
}

// CreateDeviceCA registers a device that authenticates with a TLS client
// certificate signed by a CA uploaded to the hub (UploadCertificate),
// authentication type certificateAuthority. Its certificate must carry
// its ID as subject CN.
func (c *Client) CreateDeviceCA(ctx context.Context, id string) (*wire.Device, error) {
	if id == "" {
		return nil, errNoID
	}
	return c.createDevice(ctx, id, wire.Authentication{Type: wire.AuthCertificateAuthority})
}

// createDevice creates (never replaces) a device with the given
// authentication.
func (c *Client) createDevice(ctx context.Context, id string, auth wire.Authentication) (*wire.Device, error) {
	in := map[string]any{
		"deviceId":       id,
		"status":         wire.StatusEnabled,
		"authentication": auth,
	}
	var d wire.Device
	if err := c.call(ctx, "PUT", devicePath(id), in, &d, nil); err != nil {
		return nil, err
	}
	return &d, nil
}

func certificatePath(name string) string { return "/certificates/" + url.PathEscape(name) }

// UploadCertificate stores a CA certificate (PEM) on the hub under name,
// replacing one of that name. Devices of type certificateAuthority whose
// certificates chain to it can connect from then on. It needs a policy
// with RegistryWrite.
func (c *Client) UploadCertificate(ctx context.Context, name, pem string) (*wire.CACertificate, error) {
	if name == "" {
		return nil, errors.New("service: empty certificate name")
	}
	var out wire.CACertificate
	if err := c.call(ctx, "PUT", certificatePath(name), map[string]string{"certificate": pem}, &out, nil); err != nil {
		return nil, certErr(err)
	}
	return &out, nil
}

// GetCertificate returns the CA certificate called name.
func (c *Client) GetCertificate(ctx context.Context, name string) (*wire.CACertificate, error) {
	if name == "" {
		return nil, errors.New("service: empty certificate name")
	}
	var out wire.CACertificate
	if err := c.call(ctx, "GET", certificatePath(name), nil, &out, nil); err != nil {
		return nil, certErr(err)
	}
	return &out, nil
}

// ListCertificates returns the CA certificates uploaded to the hub.
func (c *Client) ListCertificates(ctx context.Context) ([]wire.CACertificate, error) {
	var out []wire.CACertificate
	if err := c.call(ctx, "GET", "/certificates", nil, &out, nil); err != nil {
		return nil, err
	}
	if out == nil {
		out = []wire.CACertificate{}
	}
	return out, nil
}

// DeleteCertificate removes the CA certificate called name. Devices it
// vouched for are refused from their next connection on.
func (c *Client) DeleteCertificate(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("service: empty certificate name")
	}
	return certErr(c.call(ctx, "DELETE", certificatePath(name), nil, nil, nil))
}

// certErr makes a 404 about a certificate read as one, also from a hub
// that sends no code of its own for it.
func certErr(err error) error {
	var ae *APIError
	if errors.As(err, &ae) && ae.StatusCode == 404 && ae.Code != wire.CodeCertificateNotFound {
		return fmt.Errorf("%w: %w", ErrCertificateNotFound, err)
	}
	return err
}
