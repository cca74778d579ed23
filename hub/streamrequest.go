package hub

// The stream request: POST /twins/{id}/streams/{name}, Azure's, and its
// one-request form, a WebSocket upgrade (GET) on the same path; each
// checks the caller, the limits and the request, asks the device and
// answers the service.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/wire"
)

// timeoutHeader reads one of the streaming timeout headers (seconds, may be
// fractional), defaulting to def and clamped to max.
func timeoutHeader(r *http.Request, name string, def, max time.Duration) (time.Duration, error) {
	v := r.Header.Get(name)
	if v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f <= 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("header %s: %q is not a positive number of seconds", name, v)
	}
	d := time.Duration(f * float64(time.Second))
	if f*float64(time.Second) > float64(max) {
		d = max
	}
	return d, nil
}

func (s *Server) handleCreateStream(w http.ResponseWriter, r *http.Request) {
	if inv, window, respTimeout, ok := s.streamRequest(w, r); ok {
		s.createStream(r.Context(), &httpAnswer{s: s, w: w, r: r}, inv, window, respTimeout)
	}
}

// streamAnswer answers a stream request: the HTTP response of the POST or
// of the one-request upgrade (httpAnswer), or the MuxAnswer of a session
// stream (muxAnswer). Exactly one of its methods is called, once.
type streamAnswer interface {
	// fail answers an error: status, Azure's error code and message.
	fail(status, code int, msg string)
	// throttled answers 429 for a limit, with when to try again.
	throttled(retry time.Duration, msg string)
	// rejected answers the device's rejection, with its status.
	rejected(deviceStatus int)
	// accepted answers the device's yes: the service's side joins st.
	accepted(st *relay.Stream, url string)
}

// httpAnswer answers on HTTP; join makes the one-request upgrade's
// connection the service side of an accepted stream.
type httpAnswer struct {
	s    *Server
	w    http.ResponseWriter
	r    *http.Request
	join bool
}

func (a *httpAnswer) fail(status, code int, msg string) { writeError(a.w, status, code, msg) }

func (a *httpAnswer) throttled(retry time.Duration, msg string) { writeThrottled(a.w, retry, msg) }

func (a *httpAnswer) rejected(deviceStatus int) {
	a.w.Header().Set(wire.HeaderIsAccepted, "False")
	// Why, for Tether's SDK; Azure's read no more than the False.
	a.w.Header().Set(wire.HeaderDeviceStatus, strconv.Itoa(deviceStatus))
	a.w.WriteHeader(http.StatusOK)
}

func (a *httpAnswer) accepted(st *relay.Stream, url string) {
	if a.join {
		a.s.joinAccepted(a.w, a.r, st, url)
		return
	}
	answerAccepted(a.w, a.r, st, url)
}

// handleOpenStream is Tether's one-request stream opening
// (docs/protocol.md): a WebSocket upgrade on the stream request's own path,
// with the service's credentials and the same headers as the POST. The
// hub asks the device, and on its yes answers 101 and the connection is
// the stream's service side at once: no answer to read and no second
// request, one round trip fewer to the first byte. Every other outcome
// gets the POST's answer.
func (s *Server) handleOpenStream(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "a GET on a stream path must be a WebSocket upgrade; POST asks for a stream the Azure way")
		return
	}
	r = bearerFromProtocols(r) // a browser's token (streambrowser.go)
	if inv, window, respTimeout, ok := s.streamRequest(w, r); ok {
		s.createStream(r.Context(), &httpAnswer{s: s, w: w, r: r, join: true}, inv, window, respTimeout)
	}
}

// streamRequest checks what a stream request's two forms share: the
// caller's right, the rate limits, the name and the timeouts. It has
// answered when ok is false.
func (s *Server) streamRequest(w http.ResponseWriter, r *http.Request) (inv *invocation, window, respTimeout time.Duration, ok bool) {
	start := time.Now()
	epoch := s.keys.epoch.Load() // before the policy is read (keys.go)
	policy, err := s.authService(r, registry.ServiceConnect)
	if err != nil {
		unauthorized(w)
		return nil, 0, 0, false
	}
	if !s.allowStream(&httpAnswer{w: w}, r.RemoteAddr, policy.Name) {
		return nil, 0, 0, false // 429, not a stream invocation: no stream-log record
	}
	inv = &invocation{
		deviceID: r.PathValue("id"), module: r.PathValue("module"), name: r.PathValue("name"),
		policy: policy.Name, start: start, sdk: r.UserAgent(), remote: r.RemoteAddr,
		key: requestKey(r.Header, policy), epoch: epoch,
	}
	if err := validStreamPath(inv.deviceID, inv.module, inv.name); err != nil {
		// Not an invocation of a device either: no stream-log record.
		s.badRequest(w, r, err)
		return nil, 0, 0, false
	}
	window, err = timeoutHeader(r, wire.HeaderConnectTimeout, s.opts.Window, s.opts.MaxWindow)
	if err == nil {
		respTimeout, err = timeoutHeader(r, wire.HeaderResponseTimeout, window, s.opts.MaxWindow)
		if err == nil {
			return inv, window, respTimeout, true
		}
	}
	writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
	return nil, 0, 0, false
}

// validStreamPath checks the ids and the name of a stream request's path
// before the registry or a device is asked anything: a malformed one is the
// caller's mistake, never the hub's, and a client id too long for a NATS
// subject would cost the node its NATS connection. module is empty on the
// device route.
func validStreamPath(deviceID, module, name string) error {
	if err := registry.ValidateID(deviceID); err != nil {
		return err
	}
	if module != "" {
		if err := registry.ValidateModuleID(module); err != nil {
			return err
		}
	}
	return wire.ValidateStreamName(name)
}

// answerAccepted is the POST's answer to a stream the device accepted:
// where and with which token the service joins.
func answerAccepted(w http.ResponseWriter, _ *http.Request, st *relay.Stream, url string) {
	h := w.Header()
	h.Set(wire.HeaderIsAccepted, "True")
	h.Set(wire.HeaderURL, url)
	h.Set(wire.HeaderAuthToken, st.ServiceToken)
	w.WriteHeader(http.StatusOK)
}

// joinAccepted makes the one-request opening's connection the service
// side of the stream the device accepted: the relay serves it as the
// service's upgrade to the streaming URL with its token, and its 101
// carries the POST's headers but the token.
func (s *Server) joinAccepted(w http.ResponseWriter, r *http.Request, st *relay.Stream, streamURL string) {
	u, err := neturl.Parse(streamURL)
	if err != nil {
		// streamURL is the hub's own making.
		s.log.Error("stream URL", "url", streamURL, "err", err)
		s.relay.Cancel(st.ID)
		writeError(w, http.StatusInternalServerError, wire.CodeServerError, "bad streaming URL")
		return
	}
	ctx := relay.WithResponseHeader(r.Context(), http.Header{
		wire.HeaderOneRequest: {"1"},
		wire.HeaderIsAccepted: {"True"},
		wire.HeaderURL:        {streamURL},
	})
	join := r.Clone(ctx)
	join.URL.Path, join.URL.RawPath = u.Path, u.RawPath
	join.Header.Set("Authorization", "Bearer "+st.ServiceToken)
	s.relay.ServeHTTP(w, join)
}

// createStream asks the device and answers the service through a. Every
// path ends in exactly one stream-log record: directly when no relay
// stream was opened, otherwise when the relay reports the stream done. A
// refusal by a limit (429) is no invocation and has none: a flood must not
// become a flood of records. ctx ends with the service's request (or
// session).
func (s *Server) createStream(ctx context.Context, a streamAnswer, inv *invocation, window, respTimeout time.Duration) {
	fail := func(status, code int, result, msg string) {
		inv.answer(status, result)
		a.fail(status, code, msg)
	}
	clientID := inv.deviceID
	if inv.module != "" {
		clientID += "/" + inv.module
	}
	// Read for every stream, a device with its data session open here too:
	// a device disabled or deleted through another node is refused from
	// the moment that node answered, where this node's watch and the
	// change's kick reach it only later, after the stream would have.
	var devStatus string
	var err error
	if inv.devStatus != nil {
		devStatus, err = inv.devStatus.wait()
	} else {
		devStatus, err = s.deviceStatus(ctx, inv.deviceID)
	}
	switch {
	case errors.Is(err, registry.ErrNotFound):
		fail(http.StatusNotFound, wire.CodeDeviceNotFound, wire.ResultError, fmt.Sprintf("Device %s not registered", inv.deviceID))
		s.logInvocation(inv, nil)
		return
	case err != nil:
		s.log.Error("reading the registry", "device", inv.deviceID, "err", err)
		fail(http.StatusInternalServerError, wire.CodeServerError, wire.ResultError, "registry unavailable")
		s.logInvocation(inv, nil)
		return
	case devStatus == wire.StatusDisabled:
		fail(http.StatusNotFound, wire.CodeNotOnline, wire.ResultOffline, fmt.Sprintf("Device %s is disabled", inv.deviceID))
		s.logInvocation(inv, nil)
		return
	}
	st, err := s.relay.Open(inv.deviceID, inv.name, window)
	if err != nil && s.streamLimited(a, err) {
		return // 429 (counted and logged by the relay's OnLimit), no stream-log record
	}
	if err != nil {
		s.log.Warn("opening a stream", "device", inv.deviceID, "err", err)
		fail(http.StatusServiceUnavailable, wire.CodeServerError, wire.ResultError, "the hub is shutting down")
		s.logInvocation(inv, nil)
		return
	}
	inv.streamID = st.ID
	s.track(inv)
	if !s.streamKeyValid(ctx, inv) {
		fail(http.StatusUnauthorized, wire.CodeUnauthorized, wire.ResultError, "Unauthorized")
		s.relay.Cancel(st.ID)
		return
	}
	url := s.streamURL(st)
	req := routeRequest{Name: inv.name, URL: url, Token: st.DeviceToken, streamID: st.ID}
	if ma, ok := a.(*muxAnswer); ok {
		req.early = ma.gate
	}
	status, err := s.askDevice(ctx, clientID, req, respTimeout)
	switch {
	case errors.Is(err, errOffline):
		fail(http.StatusNotFound, wire.CodeNotOnline, wire.ResultOffline, fmt.Sprintf("Device %s is not online", clientID))
		s.relay.Cancel(st.ID)
	case errors.Is(err, errTimeout):
		fail(http.StatusGatewayTimeout, wire.CodeGatewayTimeout, wire.ResultTimedOut, "Timed out waiting for the response from device.")
		s.relay.Cancel(st.ID)
	case err != nil:
		s.log.Error("stream request", "device", clientID, "err", err)
		fail(http.StatusInternalServerError, wire.CodeServerError, wire.ResultError, "routing the request failed")
		s.relay.Cancel(st.ID)
	case status != http.StatusOK:
		inv.answer(http.StatusOK, wire.ResultRejected)
		a.rejected(status)
		s.relay.Cancel(st.ID)
	default:
		inv.answer(http.StatusOK, wire.ResultAccepted)
		a.accepted(st, url)
	}
}

// deviceStatus reads device id's status in the registry.
func (s *Server) deviceStatus(ctx context.Context, id string) (string, error) {
	ctx, cancel := ctxTimeout(ctx)
	defer cancel()
	return s.reg.Status(ctx, id)
}

// statusRead is a device's status being read from the registry. A stream
// on a service's session starts it beside the read of the session's
// policy: both are reads of the registry (a JetStream round trip each),
// made for every stream, and neither needs the other's answer.
type statusRead struct {
	done   chan struct{}
	status string
	err    error
}

// readStatus starts reading device id's status; wait has it.
func (s *Server) readStatus(ctx context.Context, id string) *statusRead {
	rd := &statusRead{done: make(chan struct{})}
	go func() {
		defer close(rd.done)
		rd.status, rd.err = s.deviceStatus(ctx, id)
	}()
	return rd
}

func (rd *statusRead) wait() (string, error) {
	<-rd.done
	return rd.status, rd.err
}
