package hub

// Terminal recordings (tetherd --record-terminals, hub/termrec): the tap
// the relay asks for as each stream pairs, and the route that hands a
// recording out.

import (
	"errors"
	"io"
	"net/http"

	"github.com/tether-io/tether/hub/registry"
	"github.com/tether-io/tether/hub/relay"
	"github.com/tether-io/tether/hub/termrec"
	"github.com/tether-io/tether/wire"
)

// recordingTap is the relay's Options.Tap: nil when nothing is recorded,
// so that the relay does nothing more per frame.
func (s *Server) recordingTap() func(relay.Stream) relay.Tap {
	if s.rec == nil {
		return nil
	}
	return func(st relay.Stream) relay.Tap { return s.rec.Tap(st.ID, st.DeviceID, st.Name) }
}

// handleRecording is GET /streams/{id}/recording: the asciicast v2 file of
// a terminal session this node recorded. It takes RegistryRead, as the
// stream logs do: a recording shows what a shell showed.
func (s *Server) handleRecording(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authService(r, registry.RegistryRead); err != nil {
		unauthorized(w)
		return
	}
	if s.rec == nil {
		writeError(w, http.StatusNotFound, wire.CodeStreamNotFound, "this hub node records no terminal sessions (tetherd --record-terminals)")
		return
	}
	f, err := s.rec.Open(r.PathValue("id"))
	if errors.Is(err, termrec.ErrNotFound) {
		writeError(w, http.StatusNotFound, wire.CodeStreamNotFound, "no recording of stream "+r.PathValue("id")+" on this hub node: only terminal sessions are recorded, by the node that relayed them")
		return
	}
	if err != nil {
		s.log.Error("reading a recording", "stream", r.PathValue("id"), "err", err)
		writeError(w, http.StatusInternalServerError, wire.CodeServerError, "cannot read the recording")
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("Cache-Control", "no-store")
	io.Copy(w, f)
}
