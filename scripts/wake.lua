-- wake.lua: the wake-up of a booking decide.lua made (Wait, at its grant
-- time): it stands, or it is given back and decided anew.
--
-- KEYS, ARGV[1 .. 3+6n]: the quota layout (quota_layout.lua), as the booking's
-- ARGV[4+6n]  max wait µs of the new decision
-- ARGV[5+6n]  the booking's grant time t µs
-- ARGV[6+6n+6(i-1) ..] limit i's booking values from decide.lua's reply:
--             booking id, mark, the four prior-state values
--
-- The booking stands unless a hold ends after both t and now (a hold over by
-- now is over, whether or not its key has expired), t is before not-before,
-- or now is within the guard of (or past) the end of t's window for a fixed
-- window limit (its units would be counted in the next window). Standing, the
-- reply is {2, max(t - now, 0), 0, t, 0, then 2 zeros per limit} (decide.lua's
-- short form) and nothing is written. Otherwise every limit's booking is given back (giveback.lua)
-- and the call decides anew, as decide.lua (after the hold, outside the
-- guard), with decide.lua's reply; a refusal is remembered under the token
-- too, so that a retried call does not give the booking back again.

local Q, why = quota_layout()
if not Q then return redis.error_reply('ERR wake.lua: ' .. why) end
local maxWait, booked = tonumber(ARGV[Q.tail]), tonumber(ARGV[Q.tail + 1])
if not (maxWait and booked) or #ARGV ~= Q.tail + 1 + 6 * Q.n then
  return redis.error_reply('ERR wake.lua: max wait, grant time or booking values')
end
if Q.dedupe then
  local replay = quota_replay(redis.call('GET', KEYS[1]))
  if replay then return replay end
end
local now = now_us()

local late = Q.notBefore > booked
for j = 1, Q.h do
  local ends = tonumber(redis.call('GET', KEYS[1 + j]) or '0') or 0
  if ends > booked and ends > now then late = true end
end
for _, lim in ipairs(Q.limits) do
  if lim.algo == 4 and now + lim.guard >= (math.floor(booked / lim.period) + 1) * lim.period then late = true end
end
if not late then
  return quota_reply(Q, 2, math.max(booked - now, 0), 0, booked, 0)
end

for i, lim in ipairs(Q.limits) do
  local b, v = Q.tail + 2 + 6 * (i - 1), {}
  for j = 0, 5 do v[j + 1] = tonumber(ARGV[b + j]) end
  giveback(lim.key, lim.algo, lim.period, lim.interval, lim.cost, booked, v, now)
end

local ok, err = quota_read(Q, now)
if not ok then return redis.error_reply('ERR wake.lua: ' .. err) end
local t, by = quota_time(Q, now)
local out
if t - now > maxWait then
  out = quota_denied(Q, now, t, by)
else
  out = quota_reply(Q, 1, t - now, 0, t, 0, true)
  quota_charge(Q, t, t, now, true, out)
end
quota_remember(Q, out)
return out
