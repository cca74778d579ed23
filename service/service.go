// Package service is Tether's service SDK: it opens device streams and
// manages the device registry of a hub, speaking the Azure IoT Hub REST
// and streaming protocol (docs/protocol.md; its names are in package wire),
// so it works against Azure's hub as well as Tether's.
//
// A stream is a net.Conn:
//
//	c, err := service.New(os.Getenv("TETHER_HUB"), service.Options{})
//	conn, err := c.OpenStream(ctx, "dev42", "ssh")
//
// # Sessions
//
// With a Tether hub, a client carries all its streams on one connection,
// its session (docs/protocol.md, "Many streams on one connection"): a
// WebSocket to the hub, dialled on the first stream and kept, on which
// each stream costs no handshake. A hub without sessions (Azure's, an
// older Tether) gets a WebSocket per stream, as before, for the client's
// life; a session that cannot be dialled just now (a proxy's 503, a
// network error) sends streams their own way and is tried again a little
// later; a session that ends (the hub restarted or is draining) is
// replaced on the next stream. Nothing of this shows in a stream: reads,
// writes, half-close, errors and close codes are the same either way.
// Options.NoSessions turns sessions off.
//
// # Early data
//
// OpenStream returns once the device accepted. StartStream returns as
// soon as the request left, and what the caller writes follows it at
// once, saving a round trip before the first byte:
//
//	st, err := c.StartStream(ctx, "dev42", "http")
//	st.Write(request)                        // leaves now
//	if err := st.Accepted(ctx); err != nil { // OpenStream's error
//		resend(st.Unsent())                    // what the device never got
//	}
//
// Until the device answers, the Stream keeps a copy of what was written,
// up to a stream's window (256 KiB, past which Write waits for the
// answer). When the device rejects the stream, the hub drops what it
// held, every call fails with the rejection, and Unsent returns the copy.
// Without a session StartStream opens the stream fully before it returns.
//
// The package never links hub code: it is what backends and the tether CLI
// embed.
package service

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tether-io/tether/internal/wsconn"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

// Defaults for the zero values of Options.
const (
	DefaultConnectTimeout  = 60 * time.Second
	DefaultResponseTimeout = 60 * time.Second
	DefaultTokenTTL        = time.Hour
)

// Options configures a Client; the zero value works against a hub whose
// certificate the system trusts.
type Options struct {
	// TLSConfig is used for the REST calls (unless HTTPClient is set) and
	// for the streaming endpoint. Nil means the system roots.
	TLSConfig *tls.Config
	// HTTPClient, when set, carries the REST calls instead of the
	// client's own.
	HTTPClient *http.Client
	// ConnectTimeout is how long the hub waits for both sides to join a
	// stream; ResponseTimeout how long it waits for the device to answer
	// a stream request. They are sent to the hub in the
	// iothub-streaming-*-timeout-in-seconds headers. Zero means 60s.
	ConnectTimeout  time.Duration
	ResponseTimeout time.Duration
	// TokenTTL is the lifetime of the SAS tokens the client signs. Zero
	// means an hour.
	TokenTTL time.Duration
	// NoSessions keeps every stream on a WebSocket of its own, as against
	// a hub without sessions, where by default streams share the client's
	// session with a hub that has them.
	NoSessions bool
}

// Client talks to one hub with one access policy. It is safe for
// concurrent use.
type Client struct {
	cs      sas.ConnectionString
	base    string
	tlsConf *tls.Config
	http    *http.Client
	ownHTTP bool
	opts    Options
	// streams keeps the connections of ended streams for later ones: a
	// stream then costs the hub no TLS handshake (tether-stream.v2).
	streams *wsconn.Pool
	// twoRequests is set once the hub answered the one-request opening as
	// a hub without it does (Azure's): OpenStream then POSTs.
	twoRequests atomic.Bool
	// mux is the session streams share with a hub that has sessions.
	mux sessions
}

// New returns a client for the hub and policy named by a service connection
// string (HostName=...;SharedAccessKeyName=...;SharedAccessKey=...).
func New(connStr string, opts Options) (*Client, error) {
	cs, err := sas.ParseConnectionString(connStr)
	if err != nil {
		return nil, err
	}
	if cs.IsDevice() {
		return nil, fmt.Errorf("%w: this is a device's connection string (DeviceId=%s); a service needs an access policy's (SharedAccessKeyName=...)", sas.ErrConnectionString, cs.DeviceID)
	}
	if opts.ConnectTimeout < 0 || opts.ResponseTimeout < 0 || opts.TokenTTL < 0 {
		return nil, errors.New("service: negative timeout or token lifetime")
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.ResponseTimeout == 0 {
		opts.ResponseTimeout = DefaultResponseTimeout
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = DefaultTokenTTL
	}
	tlsConf := opts.TLSConfig
	if tlsConf == nil {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		// Cloned so that a caller changing its config later cannot race
		// with our dials.
		tlsConf = tlsConf.Clone()
	}
	c := &Client{
		cs:      cs,
		base:    "https://" + cs.Address(),
		tlsConf: tlsConf,
		http:    opts.HTTPClient,
		opts:    opts,
		streams: wsconn.NewPool(),
	}
	c.mux.c = c
	if c.http == nil {
		// One transport for every REST call, so that they share
		// keep-alive connections (a TLS handshake costs a millisecond).
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsConf.Clone()
		// net/http keeps 2 idle connections per host by default: a
		// forwarder opening streams 32 at a time would close 30 after each
		// request and pay a handshake for each next one.
		tr.MaxIdleConnsPerHost = wsconn.PoolMaxIdle
		c.http = &http.Client{Transport: tr}
		c.ownHTTP = true
	}
	return c, nil
}

// HostName is the hub's host name as the connection string gives it,
// port included when it has one.
func (c *Client) HostName() string { return c.cs.HostName }

// Close releases the idle connections of the client's own HTTP transport
// and those kept for streams, and closes the client's session once the
// streams open on it ended. Streams already open are not affected. The
// client stays usable: a later stream dials a new session.
func (c *Client) Close() error {
	if c.ownHTTP {
		c.http.CloseIdleConnections()
	}
	c.streams.CloseIdle()
	c.mux.close()
	return nil
}

// token signs a fresh service token. Signing is one HMAC, cheaper than
// the bookkeeping of a cache that must renew before expiry.
func (c *Client) token() (string, error) {
	return c.cs.Token(c.opts.TokenTTL)
}

// newRequest builds a signed request for path, which must already be
// escaped.
func (c *Client) newRequest(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path+sep+"api-version="+wire.APIVersion, r)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	tok, err := c.token()
	if err != nil {
		return nil, fmt.Errorf("service: signing a token: %w", err)
	}
	req.Header.Set("Authorization", tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// maxBody bounds what the client reads of an answer; a registry listing
// of a thousand devices is well under a megabyte.
const maxBody = 16 << 20

// do sends req and returns the body of a 2xx answer, an *APIError for any
// other answer, or a *hubError when the hub could not be reached.
func (c *Client) do(req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, ctxErr)
		}
		return nil, nil, &hubError{addr: c.cs.Address(), err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, nil, &hubError{addr: c.cs.Address(), err: fmt.Errorf("reading the answer: %w", err)}
	}
	if resp.StatusCode/100 != 2 {
		return resp, body, apiError(resp, body)
	}
	return resp, body, nil
}

func apiError(resp *http.Response, body []byte) *APIError {
	code, msg := wire.DecodeError(body)
	return newAPIError(resp.StatusCode, resp.Header, code, msg)
}

// newAPIError is the error of an answer with status and header whose body
// held code and msg (zero and empty when it held none): the code falls
// back to the iothub-errorcode header, the message to the status's text.
func newAPIError(status int, h http.Header, code int, msg string) *APIError {
	if code == 0 {
		code = codeByName(h.Get(wire.HeaderErrorCode))
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &APIError{StatusCode: status, Code: code, Message: msg}
}

// call sends in (when not nil) as JSON and decodes a 2xx answer into out
// (when not nil).
func (c *Client) call(ctx context.Context, method, path string, in, out any, hdr map[string]string) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("service: %w", err)
		}
	}
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	_, data, err := c.do(req)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("service: %s %s: decoding the answer: %w", method, req.URL.Path, err)
	}
	return nil
}
