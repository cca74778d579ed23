package main

import (
	"errors"
	"fmt"

	"github.com/tether-io/tether/service"
	"github.com/tether-io/tether/wire"
)

// explainRejection names why the device rejected the stream, as far as
// the hub passed it on: the two causes call for different fixes, on
// different ends.
func explainRejection(err error, device, stream string) error {
	var re *service.RejectError
	errors.As(err, &re)
	switch {
	case errors.Is(err, service.ErrNotAllowed):
		return fmt.Errorf("device %q refused stream %q: not in the agent's --allow list", device, stream)
	case re != nil && re.Status == wire.AnswerTargetRefused:
		return fmt.Errorf("device %q allows stream %q but could not connect to its target: connection refused (is the service the agent's --allow names for %s running?)", device, stream, stream)
	case re != nil && re.Status == wire.AnswerTargetTimeout:
		return fmt.Errorf("device %q allows stream %q but could not connect to its target: timed out", device, stream)
	case errors.Is(err, service.ErrDeviceBusy):
		return fmt.Errorf("device %q is busy: more stream requests were waiting on it than its agent takes at once; try again", device)
	case errors.Is(err, service.ErrTargetUnreachable):
		return fmt.Errorf("device %q allows stream %q but could not connect to its target (the agent's log says why)", device, stream)
	}
	// An older hub, Azure's, or a device answering with a status of its own.
	return fmt.Errorf("device %q rejected stream %q (is it in the agent's --allow list, and does its target accept connections?)", device, stream)
}
