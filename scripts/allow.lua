-- allow.lua: one GCRA limit under one hold: cost c now or up to a max wait
-- ahead, or nothing. decide.lua decides this call the same way (no token);
-- this is its shortest form, for a client that sends each call at most once
-- (no retry dedupe), and its cheapest: each argument, table reply and number
-- conversion costs the server instructions (BENCHMARKS.md, "What a script
-- call costs"). The GCRA is gcra.lua's.
--
-- KEYS[1]  hold key: µs time (Redis's clock) before which nothing is granted
-- KEYS[2]  state key: the GCRA's state (gcra.lua)
-- ARGV[1]  span m·e µs (m units, one every e µs), ARGV[2] inc c·e µs (cost c)
-- ARGV[3]  the state's PX on an Allow's grant, ms: at least the span, the most
--          such a grant can put the tat ahead of now (a booking's tat may be
--          further: its PX is computed)
-- ARGV[4]  max wait µs (Reserve, Wait): books up to that far ahead; absent
--          (Allow): grants only now
--
-- Reply of an Allow granted or denied by the limit: one integer, the state's
-- tat less now after the call: ≥ 0 a grant (the µs until the limit is full
-- again), < 0 a denial (−the µs until cost c fits; the tat is that plus
-- span − inc ahead). Any other reply is decide.lua's layout for one limit:
-- {status, wait µs, denied by, grant time µs, 0, 0, reset µs}, short, for an
-- Allow the hold denies or a denial with a max wait, and those seven then
-- booking id, mark, prior tat, 0, 0, 0 for a grant with a max wait: status 1
-- granted or 0 denied; wait the delay until the grant or a denial's
-- retry-after; denied by -1 (the hold) or 1 (the limit); grant time the µs
-- time the units are charged at (on a denial, the earliest they could be);
-- reset the state's tat less now (≥ 0); id and mark the tat written, prior
-- tat the one before. Remaining is left 0: the caller, who knows e, derives it
-- from reset as gcra_left does, as it does from the one-integer reply.
local span, inc = ARGV[1] + 0, ARGV[2] + 0 -- + 0: cheaper than tonumber
local maxWait = ARGV[4] and ARGV[4] + 0 or 0
local values = redis.call('MGET', KEYS[1], KEYS[2])
local now = now_us()
local tat, floor = gcra_read(values[2])
if not tat then return redis.error_reply('ERR allow.lua: unreadable state') end
local t, by = now, 0
if values[1] then
  local hold = tonumber(values[1])
  if hold > t then t, by = hold, -1 end
end
local fits = gcra_fits(tat, span, inc)
if fits > t then t, by = fits, 1 end
if t - now > maxWait then
  if by == 1 and not ARGV[4] then return now - fits end
  return {0, t - now, by, maxWait > 0 and t or 0, 0, 0, math.max(tat - now, 0)}
end
local prior = tat
tat = gcra_charge(tat, t, inc)
gcra_write(KEYS[2], tat, floor, now, not ARGV[4] and ARGV[3] or nil)
if not ARGV[4] then return tat - now end
return {1, t - now, 0, t, 0, 0, tat - now, tat, tat, prior, 0, 0, 0}
