package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/wire"
)

// The shared access policy routes (docs/protocol.md): list, read, add,
// change, remove and renew keys, in the shape of Azure's
// SharedAccessSignatureAuthorizationRule. Every one takes an owner: a
// policy holding every right, as Azure's iothubowner, since whoever manages
// policies can give themselves any right.

// authOwner checks the request's token and that its policy holds every
// right; it has answered 401 when it returns false.
func (s *Server) authOwner(w http.ResponseWriter, r *http.Request) bool {
	p, err := s.authService(r, "")
	if err == nil && !p.IsOwner() {
		err = s.authFailed(r, "policy is not an owner (managing policies takes every right)", nil)
	}
	if err != nil {
		unauthorized(w)
		return false
	}
	return true
}

// policyRequest checks what the routes of one policy share: an owner's
// token, then the {name} of the path, answered 400 when malformed. It has
// answered when ok is false.
func (s *Server) policyRequest(w http.ResponseWriter, r *http.Request) (name string, ok bool) {
	if !s.authOwner(w, r) {
		return "", false
	}
	name = r.PathValue("name")
	if err := registry.ValidatePolicyName(name); err != nil {
		s.badRequest(w, r, err)
		return "", false
	}
	return name, true
}

// accessPolicy is p as the routes carry it, with its keys or without.
func accessPolicy(p registry.Policy, withKeys bool) wire.AccessPolicy {
	out := wire.AccessPolicy{KeyName: p.Name, Rights: registry.FormatRights(p.Rights)}
	if withKeys {
		out.PrimaryKey, out.SecondaryKey = p.PrimaryKey, p.SecondaryKey
	}
	return out
}

// GET /policies and POST /policies/listkeys: every policy, without or
// with its keys.
func (s *Server) handleListPolicies(w http.ResponseWriter, r *http.Request) {
	s.listPolicies(w, r, false)
}

func (s *Server) handleListPolicyKeys(w http.ResponseWriter, r *http.Request) {
	s.listPolicies(w, r, true)
}

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request, withKeys bool) {
	if !s.authOwner(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	list, err := s.reg.Policies(ctx)
	if err != nil {
		s.policyError(w, "", err)
		return
	}
	out := wire.AccessPolicyList{Value: make([]wire.AccessPolicy, 0, len(list))}
	for _, p := range list {
		out.Value = append(out.Value, accessPolicy(p, withKeys))
	}
	writeJSON(w, out)
}

// GET /policies/{name} and POST /policies/{name}/listkeys: one policy,
// without or with its keys.
func (s *Server) handleGetPolicy(w http.ResponseWriter, r *http.Request) {
	s.getPolicy(w, r, false)
}

func (s *Server) handleGetPolicyKeys(w http.ResponseWriter, r *http.Request) {
	s.getPolicy(w, r, true)
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request, withKeys bool) {
	name, ok := s.policyRequest(w, r)
	if !ok {
		return
	}
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	p, err := s.reg.Policy(ctx, name)
	if err != nil {
		s.policyError(w, name, err)
		return
	}
	writeJSON(w, accessPolicy(p, withKeys))
}

// PUT /policies/{name}: without If-Match, create only (409 when it
// exists); with If-Match: *, create or replace. The body gives the rights
// and may choose keys; a key left out is made on create and kept on
// replace. The answer holds the keys.
func (s *Server) handlePutPolicy(w http.ResponseWriter, r *http.Request) {
	name, ok := s.policyRequest(w, r)
	if !ok {
		return
	}
	var replace bool
	switch m := unquoteETag(r.Header.Get("If-Match")); m {
	case "":
	case "*":
		replace = true
	default:
		s.badRequest(w, r, fmt.Errorf("If-Match %q: a policy has no etag; send If-Match: * to replace it", m))
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var in wire.AccessPolicy
	if err := json.Unmarshal(body, &in); err != nil {
		s.badRequest(w, r, fmt.Errorf(`malformed policy document (want {"rights": "RegistryRead, ServiceConnect"}): %w`, err))
		return
	}
	if in.KeyName != "" && in.KeyName != name {
		s.badRequest(w, r, errors.New("keyName in the body differs from the path"))
		return
	}
	rights, err := registry.ParseRights(in.Rights)
	if err != nil {
		s.policyError(w, name, err)
		return
	}
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	p, created, err := s.reg.PutPolicy(ctx, registry.Policy{Name: name, Rights: rights, PrimaryKey: in.PrimaryKey, SecondaryKey: in.SecondaryKey}, replace)
	if err != nil {
		s.policyError(w, name, err)
		return
	}
	what := "access policy changed"
	if created {
		what = "access policy created"
	}
	s.log.Info(what, "policy", name, "rights", registry.FormatRights(p.Rights), "remote", r.RemoteAddr)
	writeJSON(w, accessPolicy(p, true))
}

// DELETE /policies/{name}: the policy's keys stop working, and what they
// opened ends (keys.go). The owner policy cannot be removed.
func (s *Server) handleDeletePolicy(w http.ResponseWriter, r *http.Request) {
	name, ok := s.policyRequest(w, r)
	if !ok {
		return
	}
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	if err := s.reg.DeletePolicy(ctx, name); err != nil {
		s.policyError(w, name, err)
		return
	}
	s.log.Info("access policy removed", "policy", name, "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

// POST /policies/{name}/renewkey?key=primary|secondary: a new key in
// place of that one (as az iot hub policy renew-key). Tokens signed with
// the old key fail at once, and what they opened ends (keys.go). The
// answer holds the keys.
func (s *Server) handleRenewPolicyKey(w http.ResponseWriter, r *http.Request) {
	name, ok := s.policyRequest(w, r)
	if !ok {
		return
	}
	var secondary bool
	switch k := r.URL.Query().Get("key"); k {
	case "primary":
	case "secondary":
		secondary = true
	default:
		s.badRequest(w, r, fmt.Errorf("key=%q: say key=primary or key=secondary", k))
		return
	}
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	p, err := s.reg.RotatePolicyKey(ctx, name, secondary)
	if err != nil {
		s.policyError(w, name, err)
		return
	}
	s.log.Info("access policy key renewed", "policy", name, "key", r.URL.Query().Get("key"), "remote", r.RemoteAddr)
	writeJSON(w, accessPolicy(p, true))
}

// policyError answers a registry error about policy name.
func (s *Server) policyError(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		writeError(w, http.StatusNotFound, wire.CodePolicyNotFound, fmt.Sprintf("Policy %s not found", name))
	case errors.Is(err, registry.ErrExists):
		writeError(w, http.StatusConflict, wire.CodePolicyExists, fmt.Sprintf("Policy %s already exists", name))
	case errors.Is(err, registry.ErrPrecondition):
		writeError(w, http.StatusPreconditionFailed, wire.CodePrecondition, fmt.Sprintf("Policy %s changed meanwhile; try again", name))
	case errors.Is(err, registry.ErrInvalid), errors.Is(err, registry.ErrProtected):
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, withoutSentinel(err))
	default:
		s.log.Error("registry", "policy", name, "err", err)
		writeError(w, http.StatusInternalServerError, wire.CodeServerError, "registry unavailable")
	}
}

// withoutSentinel is err's message without the registry's prefix: what
// a user reads is the reason.
func withoutSentinel(err error) string {
	msg := err.Error()
	for _, e := range []error{registry.ErrInvalid, registry.ErrProtected} {
		msg = strings.TrimPrefix(msg, e.Error()+": ")
	}
	return msg
}
