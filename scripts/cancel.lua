-- cancel.lua: give back a reservation: each limit as giveback (giveback.lua,
-- prepended to this script) states, per algorithm.
--
-- KEYS[1]   token key (the limits' slot): remembers this call's reply, so that
--           a call go-redis retries replays it instead of giving back again
--           (a booking made since may have left the state as this one's)
-- KEYS[1+i] state key of limit i (as in quota.lua)
-- ARGV[1]   grant time µs t of the reservation (quota.lua's reply)
-- ARGV[2]   "1": give back even if t has come (the caller never used the units:
--           a charge across groups undone after a later group was refused);
--           "0": nothing once t has come, on Redis's clock
-- ARGV[3]   token TTL ms; "0" turns retry dedupe off
-- ARGV[4+9(i-1) ..] for limit i: algorithm, period µs, GCRA interval µs, cost,
--           mark, then the four prior-state values quota.lua replied for it
--
-- Reply: the units given back, summed over the limits.

local dedupe = ARGV[3] ~= '0'
if dedupe then
  local prev = redis.call('GET', KEYS[1])
  if prev then return tonumber(prev) end
end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local t = tonumber(ARGV[1])
if not t or (ARGV[2] ~= '1' and t <= now) then return 0 end

local given = 0
for i = 1, #KEYS - 1 do
  local a = 4 + 9 * (i - 1)
  local v = {}
  for j = 0, 8 do v[j + 1] = tonumber(ARGV[a + j]) end
  local al, p, e, c = v[1], v[2], v[3], v[4]
  if not (al and p and e and c and v[5] and v[6] and v[7] and v[8] and v[9]) or p < 1 or e < 1 or c < 1 then
    return redis.error_reply('ERR cancel.lua: limit ' .. i .. ': bad arguments')
  end
  given = given + giveback(KEYS[1 + i], al, p, e, c, t, v[5], v[6], v[7], v[8], v[9], now)
end
if dedupe then redis.call('SET', KEYS[1], string.format('%d', given), 'PX', ARGV[3]) end
return given
