-- cancel.lua: give back the units of a reservation that has not come due.
--
-- KEYS[i]   state key of limit i (as in quota.lua)
-- ARGV[1]   grant time µs of the reservation (quota.lua's reply)
-- ARGV[2+5(i-1) ..] for limit i: algorithm, period µs, GCRA emission interval µs,
--           cost, mark (quota.lua's reply for that limit)
--
-- A limit gives its units back only while this reservation is still its last
-- charge; otherwise a later reservation was placed after it, and giving back
-- could let a newcomer share its slot, so nothing is returned (never an overshoot).
-- Reply: the number of limits that gave units back.

local function d(x) return string.format('%d', x) end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local t = tonumber(ARGV[1])
if t <= now then return 0 end

local given = 0
for i = 1, #KEYS do
  local a = 2 + 5 * (i - 1)
  local al, p, e, c, mark = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local k = KEYS[i]
  if al == 1 then
    local tat = tonumber(redis.call('GET', k) or '0')
    if tat == mark then
      local nt = tat - c * e
      if nt > now then
        redis.call('SET', k, d(nt), 'PX', d(math.ceil((nt - now) / 1000)))
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
    -- "w p c": keep the key's TTL, change the count of window w.
    local v = redis.call('GET', k)
    local w, pp, cc
    if v then w, pp, cc = string.match(v, '^(%-?%d+) (%d+) (%d+)$') end
    if w and tonumber(w) == math.floor(t / p) and tonumber(cc) == mark then
      redis.call('SET', k, w .. ' ' .. pp .. ' ' .. d(mark - c), 'KEEPTTL')
      given = given + 1
    end
  end
end
return given
