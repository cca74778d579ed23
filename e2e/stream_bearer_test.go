package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// A browser's stream: the one-request opening with the token in a
// subprotocol rather than an Authorization header. The hub selects the
// subprotocol the browser speaks, never the bearer, relays the stream,
// refuses a wrong token with 401, and its log never holds the token.
func TestStreamBearerSubprotocol(t *testing.T) {
	t.Parallel()
	var log lockedBuffer
	h := startHub(t, hubOptions{logTo: &log})
	dc := h.connectDevice(t, h.addDevice(t, "dev1"), 0)
	serveEcho(t, dc)
	cs, err := sas.ParseConnectionString(h.Owner)
	if err != nil {
		t.Fatal(err)
	}
	token, err := cs.Token(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	url := "wss://" + h.Addr + "/twins/dev1/streams/echo?api-version=" + wire.APIVersion
	dial := func(protocols ...string) (*bytes.Buffer, error) {
		var hdr bytes.Buffer
		d := ws.Dialer{
			TLSConfig: h.TLS, Protocols: protocols, Timeout: 20 * time.Second,
			OnHeader: func(key, value []byte) error {
				hdr.WriteString(string(key) + ": " + string(value) + "\n")
				return nil
			},
		}
		conn, br, hs, err := d.Dial(context.Background(), url)
		if err != nil {
			return &hdr, err
		}
		defer conn.Close()
		if hs.Protocol != wire.SubprotocolStream {
			t.Errorf("the hub selected %q, want %s", hs.Protocol, wire.SubprotocolStream)
		}
		var rw io.ReadWriter = conn
		if br != nil {
			rw = struct {
				io.Reader
				io.Writer
			}{io.MultiReader(br, conn), conn}
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if err := wsutil.WriteClientBinary(rw, []byte("from a browser")); err != nil {
			t.Fatal(err)
		}
		got, err := wsutil.ReadServerBinary(rw)
		if err != nil || string(got) != "from a browser" {
			t.Errorf("echo: %q, %v", got, err)
		}
		return &hdr, nil
	}

	hdr, err := dial(wire.SubprotocolStream, wire.BearerSubprotocol(token))
	if err != nil {
		t.Fatalf("dial with the token in a subprotocol: %v", err)
	}
	if strings.Contains(hdr.String(), wire.SubprotocolBearerPrefix) {
		t.Errorf("the hub's answer names the bearer:\n%s", hdr)
	}

	// The bearer first in the offer changes nothing.
	if _, err := dial(wire.BearerSubprotocol(token), wire.SubprotocolStream); err != nil {
		t.Fatalf("dial with the bearer offered first: %v", err)
	}

	wrong := strings.Replace(token, "sig=", "sig=AAAA", 1)
	for _, protocols := range [][]string{
		{wire.SubprotocolStream, wire.BearerSubprotocol(wrong)},
		{wire.SubprotocolStream, wire.SubprotocolBearerPrefix + "not*base64"},
		{wire.SubprotocolStream},
	} {
		_, err := dial(protocols...)
		var rej ws.StatusError
		if !errors.As(err, &rej) || int(rej) != http.StatusUnauthorized {
			t.Errorf("offering %.40q: %v, want 401", protocols, err)
		}
	}

	enc := base64.RawURLEncoding.EncodeToString([]byte(token))
	for _, secret := range []string{enc, token, cs.SharedAccessKey} {
		if strings.Contains(log.String(), secret) {
			t.Errorf("the hub's log holds a credential:\n%s", log.String())
		}
	}
}
