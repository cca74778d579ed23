package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/sas"
	"github.com/tether-io/tether/wire"
)

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.HandleFunc("GET /devicestreams", s.handleEndpoints)
	mux.HandleFunc("POST /twins/{id}/streams/{name}", s.handleCreateStream)
	mux.HandleFunc("POST /twins/{id}/modules/{module}/streams/{name}", s.handleCreateStream)
	mux.HandleFunc("GET /twins/{id}/streams/{name}", s.handleOpenStream)
	mux.HandleFunc("GET /twins/{id}/modules/{module}/streams/{name}", s.handleOpenStream)
	mux.HandleFunc("PUT /devices/{id}", s.handlePutDevice)
	mux.HandleFunc("GET /devices/{id}", s.handleGetDevice)
	mux.HandleFunc("DELETE /devices/{id}", s.handleDeleteDevice)
	mux.HandleFunc("GET /devices", s.handleListDevices)
	mux.HandleFunc("PUT /certificates/{name}", s.handlePutCertificate)
	mux.HandleFunc("GET /certificates/{name}", s.handleGetCertificate)
	mux.HandleFunc("DELETE /certificates/{name}", s.handleDeleteCertificate)
	mux.HandleFunc("GET /certificates", s.handleListCertificates)
	mux.HandleFunc("GET /policies", s.handleListPolicies)
	mux.HandleFunc("POST /policies/listkeys", s.handleListPolicyKeys)
	mux.HandleFunc("GET /policies/{name}", s.handleGetPolicy)
	mux.HandleFunc("POST /policies/{name}/listkeys", s.handleGetPolicyKeys)
	mux.HandleFunc("PUT /policies/{name}", s.handlePutPolicy)
	mux.HandleFunc("DELETE /policies/{name}", s.handleDeletePolicy)
	mux.HandleFunc("POST /policies/{name}/renewkey", s.handleRenewPolicyKey)
	mux.HandleFunc("GET /streamlogs", s.handleStreamLogs)
	mux.HandleFunc("GET /streams", s.handleStreams)
	mux.HandleFunc("DELETE /streams/{id}", s.handleKillStream)
	mux.Handle("/bridges/", s.relay)
	mux.HandleFunc("/$iothub/websocket", s.broker.HandleWebSocket)
	return mux
}

// reusedRoutes are what a reused stream connection (tether-stream.v2) may
// ask for between streams: a side joining its stream, or the next stream
// opened in one request. Anything else is answered 404, and the relay then
// closes the connection.
func (s *Server) reusedRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /twins/{id}/streams/{name}", s.handleOpenStream)
	mux.HandleFunc("GET /twins/{id}/modules/{module}/streams/{name}", s.handleOpenStream)
	mux.Handle("/bridges/", s.relay)
	return mux
}

// writeError answers in Azure's error shape: the iothub-errorcode header
// and a JSON body nesting the code and message.
func writeError(w http.ResponseWriter, status, code int, msg string) {
	h := w.Header()
	h.Set(wire.HeaderErrorCode, wire.CodeName(code))
	h.Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(wire.EncodeError(code, msg))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, wire.CodeServerError, "encoding the answer failed")
		return
	}
	_, _ = w.Write(b)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if err := s.Ready(); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// handleReady answers 200 only when storage and routing are usable: NATS
// connected, JetStream answering, and the registry readable. A load
// balancer sends no new work to a node that says no.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	err := s.Ready()
	if err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		_, err = s.reg.Policy(ctx, "iothubowner")
		cancel()
		if err != nil {
			err = fmt.Errorf("registry: %w", err)
		}
	}
	if err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// errUnauthorized is all a caller learns of why its token failed: which
// check refused it is logged, not told.
var errUnauthorized = errors.New("unauthorized")

// authService checks the request's service SAS token and that its policy
// holds right.
func (s *Server) authService(r *http.Request, right registry.Right) (registry.Policy, error) {
	tok, err := sas.ParseToken(r.Header.Get("Authorization"))
	if err != nil {
		return registry.Policy{}, s.authFailed(r, "malformed token", err)
	}
	if tok.KeyName == "" || !tok.ResourceIs(s.hostNames(), "") {
		return registry.Policy{}, s.authFailed(r, "token names no policy of this hub", nil)
	}
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	p, err := s.reg.Policy(ctx, tok.KeyName)
	if err != nil {
		s.burn(tok) // as costly as a wrong key for a known policy
		return p, s.authFailed(r, "unknown policy", err)
	}
	if err := verifyEither(tok, p.PrimaryKey, p.SecondaryKey); err != nil {
		return p, s.authFailed(r, "bad signature or expired", err)
	}
	// The caller holds a key: no back-off for it, even if the policy
	// lacks the right (authFailed below then counts one failure only).
	s.authResult(r, true)
	if right != "" && !p.Has(right) {
		return p, s.authFailed(r, "policy lacks "+string(right), nil)
	}
	return p, nil
}

func (s *Server) authFailed(r *http.Request, why string, err error) error {
	s.metrics.serviceAuth.Inc()
	s.authResult(r, false)
	s.authLog.log(s.log, slog.LevelInfo, "service authentication failed", "remote", r.RemoteAddr, "path", r.URL.Path, "why", why, "err", err)
	return errUnauthorized
}

// verifyEither accepts a token signed with either key, as Azure does so
// keys can be rolled without downtime.
func verifyEither(tok sas.Token, primary, secondary string) error {
	now := time.Now()
	err := tok.Verify(primary, now)
	if err == nil || errors.Is(err, sas.ErrExpired) || secondary == "" {
		return err
	}
	return tok.Verify(secondary, now)
}

func unauthorized(w http.ResponseWriter) {
	writeError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "Unauthorized")
}

func (s *Server) handleEndpoints(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, ""); err != nil {
		unauthorized(w)
		return
	}
	pub := strings.TrimSuffix(s.opts.PublicURL, "/")
	writeJSON(w, wire.Endpoints{StreamingEndpoints: []string{pub}})
}

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
		s.createStream(w, r, inv, window, respTimeout, answerAccepted)
	}
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
	if inv, window, respTimeout, ok := s.streamRequest(w, r); ok {
		s.createStream(w, r, inv, window, respTimeout, s.joinAccepted)
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
	if !s.allowStream(w, r, policy.Name) {
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

// badRequest answers a request whose path or query is malformed: 400
// ArgumentInvalid with why. The mistake is the caller's, so it is logged
// at debug only: a client retrying a bad id must not fill the hub's log.
func (s *Server) badRequest(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Debug("malformed request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
	writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
}

// deviceQuery reads the ?deviceId= filter of a listing, "" for none. A
// malformed id is answered (ok false) before the listing starts: it would
// otherwise select nothing, as if the device had no entry, and one too
// long for a NATS subject (the stream logs filter by subject) would cost
// the node its NATS connection.
func (s *Server) deviceQuery(w http.ResponseWriter, r *http.Request) (id string, ok bool) {
	id = r.URL.Query().Get("deviceId")
	if id != "" {
		if err := registry.ValidateID(id); err != nil {
			s.badRequest(w, r, err)
			return "", false
		}
	}
	return id, true
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

// createStream asks the device and answers the service. Every path ends
// in exactly one stream-log record: directly when no relay stream was
// opened, otherwise when the relay reports the stream done. A refusal by
// a limit (429) is no invocation and has none: a flood must not become a
// flood of records.
func (s *Server) createStream(w http.ResponseWriter, r *http.Request, inv *invocation, window, respTimeout time.Duration,
	accepted func(http.ResponseWriter, *http.Request, *relay.Stream, string)) {
	fail := func(status, code int, result, msg string) {
		inv.answer(status, result)
		writeError(w, status, code, msg)
	}
	ctx, cancel := ctxTimeout(r.Context())
	dev, err := s.reg.Record(ctx, inv.deviceID)
	cancel()
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
	case dev.Status == wire.StatusDisabled:
		fail(http.StatusNotFound, wire.CodeNotOnline, wire.ResultOffline, fmt.Sprintf("Device %s is disabled", inv.deviceID))
		s.logInvocation(inv, nil)
		return
	}
	clientID := inv.deviceID
	if inv.module != "" {
		clientID += "/" + inv.module
	}
	st, err := s.relay.Open(inv.deviceID, inv.name, window)
	if err != nil && s.streamLimited(w, err) {
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
	if !s.streamKeyValid(r.Context(), inv) {
		fail(http.StatusUnauthorized, wire.CodeUnauthorized, wire.ResultError, "Unauthorized")
		s.relay.Cancel(st.ID)
		return
	}
	url := s.streamURL(st)
	status, err := s.askDevice(r.Context(), clientID, routeRequest{Name: inv.name, URL: url, Token: st.DeviceToken}, respTimeout)
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
		w.Header().Set(wire.HeaderIsAccepted, "False")
		// Why, for Tether's SDK; Azure's read no more than the False.
		w.Header().Set(wire.HeaderDeviceStatus, strconv.Itoa(status))
		w.WriteHeader(http.StatusOK)
		s.relay.Cancel(st.ID)
	default:
		inv.answer(http.StatusOK, wire.ResultAccepted)
		accepted(w, r, st, url)
	}
}

func (s *Server) handleGetDevice(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryRead); err != nil {
		unauthorized(w)
		return
	}
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	d, err := s.reg.Get(ctx, r.PathValue("id"))
	if err != nil {
		s.registryError(w, r.PathValue("id"), err)
		return
	}
	w.Header().Set("ETag", `"`+d.ETag+`"`)
	writeJSON(w, d)
}

func (s *Server) handleListDevices(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryRead); err != nil {
		unauthorized(w)
		return
	}
	top := 1000
	if v := r.URL.Query().Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 10000 {
			writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "top must be a number from 1 to 10000")
			return
		}
		top = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	list, err := s.reg.List(ctx, top)
	if err != nil {
		s.registryError(w, "", err)
		return
	}
	if list == nil {
		list = []wire.Device{}
	}
	writeJSON(w, list)
}

func (s *Server) handlePutDevice(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryWrite); err != nil {
		unauthorized(w)
		return
	}
	id := r.PathValue("id")
	var d wire.Device
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &d); err != nil {
			writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "malformed device document: "+err.Error())
			return
		}
	}
	if d.DeviceID != "" && d.DeviceID != id {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "deviceId in the body differs from the path")
		return
	}
	d.DeviceID = id
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	saved, _, err := s.reg.Put(ctx, d, unquoteETag(r.Header.Get("If-Match")))
	if err != nil {
		s.registryError(w, id, err)
		return
	}
	if saved.Status == wire.StatusDisabled {
		s.kick(id)
	}
	w.Header().Set("ETag", `"`+saved.ETag+`"`)
	writeJSON(w, saved)
}

func (s *Server) handleDeleteDevice(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryWrite); err != nil {
		unauthorized(w)
		return
	}
	id := r.PathValue("id")
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	if err := s.reg.Delete(ctx, id, unquoteETag(r.Header.Get("If-Match"))); err != nil {
		s.registryError(w, id, err)
		return
	}
	s.kick(id)
	w.WriteHeader(http.StatusNoContent)
}

func unquoteETag(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	return strings.Trim(v, `"`)
}

func (s *Server) registryError(w http.ResponseWriter, id string, err error) {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		writeError(w, http.StatusNotFound, wire.CodeDeviceNotFound, fmt.Sprintf("Device %s not registered", id))
	case errors.Is(err, registry.ErrExists):
		writeError(w, http.StatusConflict, wire.CodeConflict, fmt.Sprintf("Device %s already exists", id))
	case errors.Is(err, registry.ErrPrecondition):
		writeError(w, http.StatusPreconditionFailed, wire.CodePrecondition, "ETag does not match")
	case errors.Is(err, registry.ErrInvalid):
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
	default:
		s.log.Error("registry", "device", id, "err", err)
		writeError(w, http.StatusInternalServerError, wire.CodeServerError, "registry unavailable")
	}
}
