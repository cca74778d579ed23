package relay

import (
	"slices"

	"github.com/gobwas/ws"
)

// CloseDevice ends every stream of deviceID, waiting or paired, because
// the device was disabled or deleted: an operator who refuses a device
// expects its tunnels gone, not only its control channel. It returns how
// many streams it ended.
func (r *Relay) CloseDevice(deviceID string) int {
	return r.closeWhere(func(st *stream) bool { return st.DeviceID == deviceID }, "device disabled or deleted")
}

// CloseStreams ends the streams with the given ids, waiting or paired,
// with close 1008 (policy violation) and reason to both sides: the hub
// withdrew what let them open (the key of the service that asked was
// rotated). It returns how many it ended; ids it does not hold are skipped.
func (r *Relay) CloseStreams(ids []string, reason string) int {
	return r.closeWhere(func(st *stream) bool { return slices.Contains(ids, st.ID) }, reason)
}

// closeWhere ends the streams that match, as CloseDevice says.
func (r *Relay) closeWhere(match func(*stream) bool, reason string) int {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return 0
	}
	var unpaired []*stream
	var waiting [][]*peer
	var pipes []*pipe
	for _, st := range r.streams {
		if !match(st) {
			continue
		}
		if st.pipe != nil {
			pipes = append(pipes, st.pipe)
			continue
		}
		unpaired = append(unpaired, st)
		waiting = append(waiting, r.endLocked(st))
	}
	r.wg.Add(1)
	defer r.wg.Done()
	r.mu.Unlock()
	for i, st := range unpaired {
		r.finishUnpaired(st, waiting[i], ClosedByHub, reason, ws.StatusPolicyViolation, reason)
	}
	bye := ws.NewCloseFrameBody(ws.StatusPolicyViolation, reason)
	for _, p := range pipes {
		p.stop(ClosedByHub, reason, [2][]byte{bye, bye})
	}
	return len(unpaired) + len(pipes)
}

// Streams lists the streams this relay holds now, waiting or paired, with
// the bytes relayed so far; Closed is zero.
func (r *Relay) Streams() []Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Info, 0, len(r.streams))
	for _, st := range r.streams {
		info := Info{ID: st.ID, DeviceID: st.DeviceID, Name: st.Name, Opened: st.opened}
		if pp := st.pipe; pp != nil {
			info.Paired, info.PairedOK = pp.paired, true
			info.BytesToDevice = pp.delivered[device].Load()
			info.BytesToService = pp.delivered[service].Load()
		}
		out = append(out, info)
	}
	return out
}
