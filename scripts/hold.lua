-- hold.lua: hold a quota (or key) so that nothing is granted before now + duration.
-- Used when an exchange answers 429/418 with Retry-After: every process pauses.
--
-- KEYS[1]  hold key (a hold key of quota_layout.lua)
-- ARGV[1]  duration µs (> 0)
--
-- A hold only ever grows: a shorter hold than the current one changes nothing.
-- Reply: µs until the hold, as it now stands, ends.

local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local dur = tonumber(ARGV[1])
local till = now + dur
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if till > cur then
  redis.call('SET', KEYS[1], string.format('%d', till), 'PX', string.format('%d', math.ceil(dur / 1000)))
  return dur
end
return cur - now
