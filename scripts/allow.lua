-- allow.lua: one GCRA limit under one hold: cost c now or up to a max wait
-- ahead, or nothing. decide.lua decides this call the same way (no token);
-- this is its shortest form, for a client that sends each call at most once
-- (no retry dedupe), and its cheapest: each argument, table reply and
-- string-to-number conversion costs the server instructions (BENCHMARKS.md,
-- "What a script call costs"). The GCRA is gcra.lua's.
--
-- KEYS[1]  hold key: µs time (Redis's clock) before which nothing is granted
-- KEYS[2]  state key: the GCRA's state (gcra.lua)
-- ARGV[1]  max units m, ARGV[2] emission interval e µs, ARGV[3] cost c
-- ARGV[4]  the state's PX in ms: at least m·e plus the max wait, the most a
--          grant can put its tat ahead of now
-- ARGV[5]  max wait µs (Reserve, Wait): books up to that far ahead; absent
--          (Allow): grants only now
--
-- Reply of an Allow granted or denied by the limit: one integer, the state's
-- tat less now after the call: ≥ 0 a grant (the µs until the limit is full
-- again; the caller derives the units left from m and e), < 0 a denial
-- (−the µs until cost c fits; the tat is that plus (m−c)·e ahead).
-- Any other reply is decide.lua's layout for one limit: {status, wait µs,
-- denied by, grant time µs, 0, remaining, reset µs}, short, for an Allow the
-- hold denies or a denial with a max wait, and those seven then booking id,
-- mark, prior tat, 0, 0, 0 for a grant with a max wait: status 1 granted or
-- 0 denied; wait the delay until the grant or a denial's retry-after; denied
-- by -1 (the hold) or 1 (the limit); grant time the µs time the units are
-- charged at (on a denial, the earliest they could be); id and mark the tat
-- written, prior tat the one before.
local m, e, c = ARGV[1] + 0, ARGV[2] + 0, ARGV[3] + 0 -- + 0: cheaper than tonumber
local maxWait = ARGV[5] and ARGV[5] + 0 or 0
local values = redis.call('MGET', KEYS[1], KEYS[2])
local now = now_us()
local tat, floor = gcra_read(values[2])
if not tat then return redis.error_reply('ERR allow.lua: unreadable state') end
local t, by = now, 0
if values[1] then
  local hold = tonumber(values[1])
  if hold > t then t, by = hold, -1 end
end
local fits = gcra_fits(tat, m, e, c)
if fits > t then t, by = fits, 1 end
if t - now > maxWait then
  if by == 1 and not ARGV[5] then return now - fits end
  local rem, reset = gcra_left(tat, now, m, e)
  return {0, t - now, by, maxWait > 0 and t or 0, 0, rem, reset}
end
local prior = tat
tat = gcra_charge(tat, t, e, c)
gcra_write(KEYS[2], tat, floor, now, ARGV[4])
if not ARGV[5] then return tat - now end
local rem, reset = gcra_left(tat, now, m, e)
return {1, t - now, 0, t, 0, rem, reset, tat, tat, prior, 0, 0, 0}
