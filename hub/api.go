package hub

// The hub's REST API: its table of routes, in one place, and what the
// handlers share (Azure's error shape, JSON answers, the probes, the
// service's authentication, malformed requests, ETags). The handlers live
// with their resource: stream requests in streamrequest.go, open streams
// in streams.go, stream logs in streamlogs.go, devices in devices.go, CA
// certificates in certificates.go, access policies in policies.go, the
// registry's change feed in events.go, the cluster's nodes in nodes.go;
// the web console's files are package console's.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tether-io/tether/hub/console"
	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/internal/version"
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
	mux.HandleFunc("GET /streams/{id}/recording", s.handleRecording)
	mux.HandleFunc("GET /events", s.handleEvents)
	mux.HandleFunc("GET /nodes", s.handleNodes)
	mux.Handle("GET /console/", console.Handler())
	mux.Handle(wire.PathBridges, s.relay)
	mux.HandleFunc(wire.PathMQTTWebSocket, s.broker.HandleWebSocket)
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
	mux.Handle(wire.PathBridges, s.relay)
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
	// The version on a line of its own after "ok", which stays the first:
	// checks that read only that line see what they always saw.
	_, _ = io.WriteString(w, "ok\n"+version.Line("tetherd")+"\n")
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

func unquoteETag(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	return strings.Trim(v, `"`)
}
