package wsguard

// Streams returns how many streams c counts, for tests.
func Streams(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams
}
