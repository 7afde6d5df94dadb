-- batch.lua: R identical Allow decisions of one GCRA limit under one hold,
-- coalesced into one call (Options.Coalesce) and decided in order: cost c
-- each, now or not at all. They are identical, so once one does not fit,
-- none after it does: the first g are granted.
--
-- KEYS[1]  token key: remembers this call's reply so a retried call is not
--          charged twice
-- KEYS[2]  hold key, KEYS[3] state key (as in allow.lua)
-- ARGV[1]  token TTL ms; "0" turns retry dedupe off
-- ARGV[2]  max units m, ARGV[3] emission interval e µs, ARGV[4] cost c,
-- ARGV[5]  R, the number of decisions (≥ 2)
--
-- Reply: decide.lua's layout for two limits, short (nothing is booked: no
-- booking values): {g, wait µs, denied by, 0, 0, then remaining and reset of
-- the first granted decision, then remaining and reset after the g grants}. wait and denied by
-- (-1 the hold, 1 the limit) are those of the decisions after the g-th.
-- Decision i ≤ g has c·(i-1) fewer remaining and c·e·(i-1) µs more reset
-- than the first.
local m, e, c, reps = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if not (m and e and c and reps) or reps < 2 or c < 1 or e < 1 then return redis.error_reply('ERR batch.lua: bad arguments') end
local dedupe = ARGV[1] ~= '0'
local values = redis.call('MGET', KEYS[2], KEYS[3], KEYS[1])
if dedupe and values[3] then
  local out = {}
  for x in string.gmatch(values[3], '%-?%d+') do out[#out + 1] = tonumber(x) end
  return out
end
local now = now_us()
local hold = tonumber(values[1] or '0') or 0
local tat, floor = gcra_read(values[2])
if not tat then return redis.error_reply('ERR batch.lua: unreadable state') end
-- Decision i fits while base + i·c·e - m·e <= now.
local base, granted = math.max(tat, now), 0
if hold <= now then granted = math.max(0, math.min(reps, math.floor((now - base + m * e) / (c * e)))) end
local last = tat
if granted > 0 then
  last = base + granted * c * e
  gcra_write(KEYS[3], last, floor, now)
end
local t, by = now, 0
if hold > t then t, by = hold, -1 end
local fits = gcra_fits(last, m * e, c * e)
if fits > t then t, by = fits, 1 end
local after = math.max(last - now, 0)
local out = {granted, t - now, by, 0, 0,
  math.max(math.floor((m * e - (base + c * e - now)) / e), 0), base + c * e - now,
  math.max(math.floor((m * e - after) / e), 0), after}
if dedupe then
  local enc = {}
  for i = 1, #out do enc[i] = digits(out[i]) end
  redis.call('SET', KEYS[1], table.concat(enc, ' '), 'PX', ARGV[1])
end
return out
