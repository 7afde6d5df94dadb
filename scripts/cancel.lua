-- cancel.lua: give back a reservation: each limit as giveback (giveback.lua)
-- states, per algorithm.
--
-- KEYS[1]   token key (the limits' slot): remembers this call's reply, so that
--           a call go-redis retries replays it instead of giving back again
--           (a booking made since may have left the state as this one's)
-- KEYS[1+i] state key of limit i (as in decide.lua)
-- ARGV[1]   grant time µs t of the reservation (decide.lua's reply)
-- ARGV[2]   "1": give back even if t has come (the caller never used the units:
--           a charge across groups undone after a later group was refused);
--           "0": nothing once t has come, on Redis's clock
-- ARGV[3]   token TTL ms; "0" turns retry dedupe off
-- ARGV[4+10(i-1) ..] limit i: algorithm, period µs, GCRA interval µs, cost,
--           then the six booking values decide.lua replied for it (booking
--           id, mark, four prior-state values)
--
-- Reply: the units given back, summed over the limits.

local dedupe = ARGV[3] ~= '0'
if dedupe then
  local prev = redis.call('GET', KEYS[1])
  if prev then return tonumber(prev) end
end
local now = now_us()
local t = tonumber(ARGV[1])
if not t or #ARGV ~= 3 + 10 * (#KEYS - 1) then return redis.error_reply('ERR cancel.lua: bad arguments') end
if ARGV[2] ~= '1' and t <= now then return 0 end

local limits = {}
for i = 1, #KEYS - 1 do
  local v = {}
  for j = 0, 9 do v[j + 1] = tonumber(ARGV[4 + 10 * (i - 1) + j]) end
  for j = 1, 10 do
    if not v[j] then return redis.error_reply('ERR cancel.lua: limit ' .. i .. ': bad arguments') end
  end
  if v[2] < 1 or v[3] < 1 or v[4] < 1 then return redis.error_reply('ERR cancel.lua: limit ' .. i .. ': bad arguments') end
  limits[i] = v
end
local given = 0
for i, v in ipairs(limits) do
  given = given + giveback(KEYS[1 + i], v[1], v[2], v[3], v[4], t, {v[5], v[6], v[7], v[8], v[9], v[10]}, now)
end
if dedupe then redis.call('SET', KEYS[1], digits(given), 'PX', ARGV[3]) end
return given
