package service

// SessionOpen reports whether c has a session with its hub, for the tests
// of package service_test, which run a real hub.
func SessionOpen(c *Client) bool {
	c.mux.mu.Lock()
	defer c.mux.mu.Unlock()
	return c.mux.cur != nil && !c.mux.cur.ys.IsClosed()
}
