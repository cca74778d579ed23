package device

import (
	"errors"
	"fmt"

	"github.com/tether-io/tether/internal/certerr"
)

// ErrNoCertificate is Dial's error for a connection string that says
// x509=true with no client certificate to present.
var ErrNoCertificate = errors.New("device: the connection string says x509=true but no client certificate is given: set Options.Certificate to the device's certificate, whose subject CN is the device ID, and its key")

// hubCertError is a hub whose TLS certificate failed verification, worded
// by its cause (certerr). The TLS error stays in the chain for errors.As.
type hubCertError struct {
	addr string
	f    *certerr.Failure
	err  error
}

func (e *hubCertError) Error() string {
	return fmt.Sprintf("device: the hub at %s: %s (%s)", e.addr, e.f, e.f.SDKFix())
}

func (e *hubCertError) Unwrap() error { return e.err }
