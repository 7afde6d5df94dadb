-- allow.lua: one GCRA limit under one hold: cost c now or up to a max wait
-- ahead, or nothing. decide.lua decides this call the same way (no token);
-- this is its shortest form, for a client that sends each call at most once
-- (no retry dedupe). The GCRA is gcra.lua's.
--
-- KEYS[1]  hold key: µs time (Redis's clock) before which nothing is granted
-- KEYS[2]  state key: the GCRA's state (gcra.lua)
-- ARGV[1]  max units m, ARGV[2] emission interval e µs, ARGV[3] cost c
-- ARGV[4]  max wait µs: 0 grants only now (Allow); > 0 books up to that far
--          ahead (Reserve, Wait)
--
-- Reply: decide.lua's layout for one limit, short when nothing is booked:
-- {status, wait µs, denied by, grant time µs, 0, remaining, reset µs} for a
-- denial or a grant with max wait 0 (the six booking values, all 0, left
-- out), and those seven then booking id, mark, prior tat, 0, 0, 0 for a grant
-- with max wait > 0: status 1 granted or 0 denied; wait the delay until the
-- grant or a denial's retry-after; denied by -1 (the hold), 1 (the limit) or
-- 0; grant time 0 when max wait is 0, else the µs time the units are charged
-- at (on a denial, the earliest time they could be); reset the µs until the
-- limit is full again; id and mark the tat written, prior tat the one before.
local m, e, c = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local maxWait = ARGV[4] == '0' and 0 or tonumber(ARGV[4]) -- an Allow's '0' without a strtod
if not maxWait or maxWait < 0 then return redis.error_reply('ERR allow.lua: ARGV[4] must be a number ≥ 0') end
local values = redis.call('MGET', KEYS[1], KEYS[2])
local now = now_us()
local hold = values[1] and tonumber(values[1]) or 0 -- no hold: no strtod
local tat, floor = gcra_read(values[2])
if not tat then return redis.error_reply('ERR allow.lua: unreadable state') end
local t, by = now, 0
if hold > t then t, by = hold, -1 end
local fits = gcra_fits(tat, m, e, c)
if fits > t then t, by = fits, 1 end
if t - now > maxWait then
  local rem, reset = gcra_left(tat, now, m, e)
  return {0, t - now, by, maxWait > 0 and t or 0, 0, rem, reset}
end
local prior = tat
tat = gcra_charge(tat, t, e, c)
gcra_write(KEYS[2], tat, floor, now)
local rem, reset = gcra_left(tat, now, m, e)
if maxWait == 0 then return {1, 0, 0, 0, 0, rem, reset} end
return {1, t - now, 0, t, 0, rem, reset, tat, tat, prior, 0, 0, 0}
