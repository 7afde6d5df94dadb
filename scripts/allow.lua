-- allow.lua: Allow of one GCRA limit under one hold: cost c now, or nothing.
-- quota.lua decides this call the same way (max wait 0, no lease, no token);
-- this is its shortest form, for a client that sends each call at most once
-- (no retry dedupe). The GCRA is gcra.lua's, prepended.
--
-- KEYS[1]  hold key: µs time (Redis's clock) before which nothing is granted
-- KEYS[2]  state key: the GCRA's theoretical arrival time, µs
-- ARGV[1]  max units m, ARGV[2] emission interval e µs, ARGV[3] cost c
--
-- Reply: {granted, wait µs, remaining, reset µs}: granted is 1, or 0 when the
-- limit refused, -1 when the hold did; wait is a denial's retry-after (0 when
-- granted); reset is the µs until the limit is full again.
local m, e, c = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local mv = redis.call('MGET', KEYS[1], KEYS[2])
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local hold, tat = tonumber(mv[1] or '0'), tonumber(mv[2] or '0')
local t, g = now, 1
if hold > t then t, g = hold, -1 end
local fits = gcra_fits(tat, m, e, c)
if fits > t then t, g = fits, 0 end
if g ~= 1 then
  local rem, reset = gcra_left(tat, now, m, e)
  return {g, t - now, rem, reset}
end
tat = gcra_charge(tat, now, e, c)
gcra_write(KEYS[2], tat, now)
local rem, reset = gcra_left(tat, now, m, e)
return {1, 0, rem, reset}
