package broker

import "github.com/tether-io/tether/wire"

// ClientType is the DeviceClientType that clientID's session here named
// in its username (wire.ClientType: bounded, printable), "" for none or no
// session. The hub records it with the device's connection state, so that
// an operator sees which agent, and which version, each device runs.
func (b *Broker) ClientType(clientID string) string {
	b.mu.Lock()
	s := b.current[clientID]
	var username string
	if s != nil && s.cl != nil {
		// Set by mochi from CONNECT before Authenticate, never after.
		username = string(s.cl.Properties.Username)
	}
	b.mu.Unlock()
	return wire.ClientType(username)
}
