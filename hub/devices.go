package hub

// The device registry's routes: GET, PUT and DELETE /devices/{id} and
// GET /devices.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/wire"
)

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
		s.dropDataSessions(id)
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
	s.dropDataSessions(id)
	s.kick(id)
	w.WriteHeader(http.StatusNoContent)
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
