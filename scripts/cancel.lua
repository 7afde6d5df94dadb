-- cancel.lua: give back a reservation that has not come due, by restoring each
-- limit's state as it was just before the booking.
--
-- KEYS[i]   state key of limit i (as in quota.lua)
-- ARGV[1]   grant time µs t of the reservation (quota.lua's reply)
-- ARGV[2+8(i-1) ..] for limit i: algorithm, period µs, cost, mark, then the
--           four prior-state values quota.lua replied for it (GCRA: tat, 0, 0, 0;
--           window: L, P, p, c, or -1, 0, 0, 0 for no state; sliding log: zeros)
--
-- A limit is restored only while this reservation is still its last charge
-- (its state is the one the booking wrote); otherwise a later booking was
-- placed after it, and giving back could let a newcomer share its slot, so
-- nothing is returned (never an overshoot). Restoring the exact earlier state,
-- rather than subtracting the cost, also undoes what the booking moved: a GCRA
-- tat pushed to a grant time set by another limit, a window state moved to the
-- booking's later window.
-- Reply: the number of limits that gave units back.

local function d(x) return string.format('%d', x) end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local t = tonumber(ARGV[1])
if not t or t <= now then return 0 end

local given = 0
for i = 1, #KEYS do
  local a = 2 + 8 * (i - 1)
  local al, p, c, mark = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local p1, p2, p3, p4 = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
  if not (al and p and c and mark and p1 and p2 and p3 and p4) or p < 1 then
    return redis.error_reply('ERR cancel.lua: limit ' .. i .. ': bad arguments')
  end
  local k = KEYS[i]
  if al == 1 then
    if tonumber(redis.call('GET', k) or '0') == mark then
      if p1 > now then
        redis.call('SET', k, d(p1), 'PX', d(math.ceil((p1 - now) / 1000)))
      else
        redis.call('DEL', k)
      end
      given = given + 1
    end
  elseif al == 2 then
    local member = d(mark) .. ':' .. d(c)
    local l = redis.call('ZRANGE', k, -1, -1)
    if l[1] == member then
      redis.call('ZREM', k, member)
      given = given + 1
    end
  else
    -- The booking wrote "L p pp mark" with L = t, or the earlier L when that
    -- was later in the same window (see quota.lua).
    local v = redis.call('GET', k)
    local L, P, cc
    if v then L, P, cc = string.match(v, '^(%d+) (%d+) %d+ (%d+)$') end
    local want = t
    if p1 > t and math.floor(p1 / p) == math.floor(t / p) then want = p1 end
    if L and tonumber(L) == want and tonumber(P) == p and tonumber(cc) == mark then
      local ends = 0
      if p2 > 0 then
        ends = (math.floor(p1 / p2) + 1) * p2
        if al == 3 then ends = ends + p2 end
      end
      if ends > now then
        redis.call('SET', k, d(p1) .. ' ' .. d(p2) .. ' ' .. d(p3) .. ' ' .. d(p4), 'PX', d(math.ceil((ends - now) / 1000)))
      else
        redis.call('DEL', k)
      end
      given = given + 1
    end
  end
end
return given
