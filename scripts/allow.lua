-- allow.lua: Allow of one GCRA limit under one hold: cost c now, or nothing.
-- decide.lua decides this call the same way (max wait 0, no token); this is
-- its shortest form, for a client that sends each call at most once (no
-- retry dedupe). The GCRA is gcra.lua's.
--
-- KEYS[1]  hold key: µs time (Redis's clock) before which nothing is granted
-- KEYS[2]  state key: the GCRA's state (gcra.lua)
-- ARGV[1]  max units m, ARGV[2] emission interval e µs, ARGV[3] cost c
--
-- Reply: decide.lua's layout for one limit: {status, wait µs, denied by, 0,
-- 0, remaining, reset µs, then six 0s (no booking)}: status 1 granted or 0
-- denied; wait a denial's retry-after (0 when granted); denied by -1 (the
-- hold), 1 (the limit) or 0; reset the µs until the limit is full again.
local m, e, c = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local values = redis.call('MGET', KEYS[1], KEYS[2])
local now = now_us()
local hold = tonumber(values[1] or '0') or 0
local tat, floor = gcra_read(values[2])
if not tat then return redis.error_reply('ERR allow.lua: unreadable state') end
local t, by = now, 0
if hold > t then t, by = hold, -1 end
local fits = gcra_fits(tat, m, e, c)
if fits > t then t, by = fits, 1 end
if by ~= 0 then
  local rem, reset = gcra_left(tat, now, m, e)
  return {0, t - now, by, 0, 0, rem, reset, 0, 0, 0, 0, 0, 0}
end
tat = gcra_charge(tat, now, e, c)
gcra_write(KEYS[2], tat, floor, now)
local rem, reset = gcra_left(tat, now, m, e)
return {1, 0, 0, 0, 0, rem, reset, 0, 0, 0, 0, 0, 0}
