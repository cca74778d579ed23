package hub

// The CA certificates' routes: PUT, GET and DELETE /certificates/{name}
// and GET /certificates: the CAs that a device registered as
// certificateAuthority must chain to (x509.go checks the chain).

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

// certificateBody is the body of PUT /certificates/{name}: the PEM at the
// top, or under properties as Azure's management API nests it.
type certificateBody struct {
	Certificate string `json:"certificate"`
	Properties  struct {
		Certificate string `json:"certificate"`
	} `json:"properties"`
}

func (s *Server) handlePutCertificate(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryWrite); err != nil {
		unauthorized(w)
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var in certificateBody
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "malformed certificate document: "+err.Error())
		return
	}
	pem := in.Certificate
	if pem == "" {
		pem = in.Properties.Certificate
	}
	if strings.TrimSpace(pem) == "" {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, `no certificate: send {"certificate": "-----BEGIN CERTIFICATE-----..."}`)
		return
	}
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	c, err := s.reg.PutCertificate(ctx, r.PathValue("name"), pem)
	if err != nil {
		s.certificateError(w, r.PathValue("name"), err)
		return
	}
	s.log.Info("CA certificate uploaded", "name", c.Name, "subject", c.Subject, "thumbprint", c.Thumbprint)
	writeJSON(w, c)
}

func (s *Server) handleGetCertificate(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryRead); err != nil {
		unauthorized(w)
		return
	}
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	c, err := s.reg.Certificate(ctx, r.PathValue("name"))
	if err != nil {
		s.certificateError(w, r.PathValue("name"), err)
		return
	}
	writeJSON(w, c)
}

func (s *Server) handleListCertificates(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryRead); err != nil {
		unauthorized(w)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	list, err := s.reg.Certificates(ctx)
	if err != nil {
		s.certificateError(w, "", err)
		return
	}
	writeJSON(w, list)
}

func (s *Server) handleDeleteCertificate(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryWrite); err != nil {
		unauthorized(w)
		return
	}
	ctx, cancel := ctxTimeout(r.Context())
	defer cancel()
	name := r.PathValue("name")
	if err := s.reg.DeleteCertificate(ctx, name); err != nil {
		s.certificateError(w, name, err)
		return
	}
	// Sessions it let in stay up (a CA vouches at CONNECT, where a
	// withdrawn key ends its sessions: keys.go); their next connection is
	// refused.
	s.log.Info("CA certificate deleted", "name", name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) certificateError(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		writeError(w, http.StatusNotFound, wire.CodeCertificateNotFound, fmt.Sprintf("Certificate %s not found", name))
	case errors.Is(err, registry.ErrInvalid):
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
	default:
		s.log.Error("registry", "certificate", name, "err", err)
		writeError(w, http.StatusInternalServerError, wire.CodeServerError, "registry unavailable")
	}
}
