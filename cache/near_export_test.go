package cache

import "time"

// Hooks into the near cache for its tests.

// NearLive reports whether c's near cache serves reads (every node tracked).
func NearLive(c *Cache) bool { return c.core.near != nil && c.core.near.epoch.Load()&1 == 1 }

// SetNearBeforeInstall makes f run between each near read's reply and its install.
func SetNearBeforeInstall(c *Cache, f func()) { c.core.near.beforeInstall.Store(&f) }

// SetNearOnInvalidate makes f see each key Redis reports changed, after it was dropped.
func SetNearOnInvalidate(c *Cache, f func(k string)) { c.core.near.trk.onInvalidate.Store(&f) }

// SetNearClock makes the near cache read its clock from now.
func SetNearClock(c *Cache, now func() time.Duration) {
	f := func() int64 { return int64(now()) }
	c.core.near.clock.Store(&f)
}

// NearCleanUp runs the near store's pending maintenance (evictions).
func NearCleanUp(c *Cache) { c.core.near.store.CleanUp() }

// NearClientName is the CLIENT SETNAME of c's tracking connections.
func NearClientName(c *Cache) string { return c.core.near.trk.name }

// NearTracked returns the addresses of the nodes c's near cache has a live
// tracking connection to.
func NearTracked(c *Cache) []string {
	t := c.core.near.trk
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for addr, tc := range t.conns {
		if tc.live {
			out = append(out, addr)
		}
	}
	return out
}
