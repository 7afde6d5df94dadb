-- cache_incr.lua: add to a counter that lives one window from its first count.
--
-- KEYS[1]  counter key (a string holding an integer)
-- ARGV[1]  amount to add (an integer, may be 0)
-- ARGV[2]  window in ms (> 0)
--
-- The first count of a window starts the window: the counter expires a window
-- later and the next count starts a new one. A counter without a TTL (written by
-- something else) gets one, so every counter expires.
--
-- Reply: {count, ms left in the window}.

local v = redis.call('INCRBY', KEYS[1], ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  left = tonumber(ARGV[2])
end
return {v, left}
