-- inspect.lua: read, writing nothing, a quota's limits and hold as a decision
-- made now would see them: what an operator's status shows.
--
-- KEYS[1]    hold key (quota.lua's KEYS[1])
-- KEYS[2]    hold reason key: a string, absent when the hold recorded none
-- KEYS[2+i]  state key of limit i
-- ARGV[4(i-1)+1 ..] for limit i: algorithm (1 GCRA, 2 sliding log, 3 sliding
--            counter, 4 fixed window), period µs, max units, GCRA emission interval µs
--
-- Reply: {now µs, hold end µs (0: no hold in force), hold reason ('' for none),
-- then per limit: remaining, reset µs}. remaining and reset are computed as
-- quota.lua computes them for a denial: units a call could take now (before
-- any hold), and µs until the limit is back to full. Window states are read by
-- window_state (window_state.lua, prepended), the reader quota.lua uses.

local function d(x) return string.format('%d', x) end

local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local hold = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if hold <= now then hold = 0 end
local why = redis.call('GET', KEYS[2]) or ''
local out = {now, hold, why}

for i = 1, #KEYS - 2 do
  local a = 4 * (i - 1)
  local al, p, m, e = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if not (al and p and m and e) or p < 1 or m < 1 or e < 1 then
    return redis.error_reply('ERR inspect.lua: limit ' .. i .. ': algorithm, period, max or interval out of range')
  end
  local k = KEYS[2 + i]
  local rem, reset = m, 0
  if al == 1 then
    -- GCRA: the theoretical arrival time.
    local tat = tonumber(redis.call('GET', k) or '0') or 0
    reset = math.max(tat - now, 0)
    rem = math.floor((m * e - reset) / e)
  elseif al == 2 then
    -- Sliding log: members "C:w" (running total, weight) scored by µs time;
    -- the entries still counted are those after now - period.
    local first = redis.call('ZRANGEBYSCORE', k, '(' .. d(now - p), '+inf', 'LIMIT', 0, 1)
    if first[1] then
      local last = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
      local cf, wf = string.match(first[1], '(%d+):(%d+)')
      local cl = string.match(last[1], '(%d+):')
      if not (cf and cl) then return redis.error_reply('ERR inspect.lua: limit ' .. i .. ': unreadable state') end
      rem = m - (tonumber(cl) - (tonumber(cf) - tonumber(wf)))
      reset = tonumber(last[2]) + p - now
    end
  else
    local v = redis.call('GET', k)
    if v then
      local L, _, _, _, sw, sp, sc = window_state(v, p)
      if not L then return redis.error_reply('ERR inspect.lua: limit ' .. i .. ': unreadable state') end
      local w = math.floor(now / p)
      if sw == w then rem = m - sc elseif sw > w then rem = 0 end
      if al == 3 and (sw == w or sw == w - 1) then
        local pp, cc = sp, sc
        if sw == w - 1 then pp, cc = sc, 0 end
        rem = math.floor(m - pp * (1 - (now - w * p) / p) - cc)
      end
      if sw >= w - 1 then reset = math.max((sw + 1 + (al == 3 and 1 or 0)) * p - now, 0) end
    end
  end
  if rem < 0 then rem = 0 end
  out[#out + 1], out[#out + 2] = rem, reset
end
return out
