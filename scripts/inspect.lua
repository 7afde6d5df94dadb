-- inspect.lua: read, writing nothing, a quota's limits and hold as a decision
-- made now would see them: what an operator's status shows.
--
-- KEYS[1]    hold key (decide.lua's KEYS[1])
-- KEYS[2]    hold reason key: a string, absent when the hold recorded none
-- KEYS[2+i]  state key of limit i
-- ARGV[4(i-1)+1 ..] for limit i: algorithm (1 GCRA, 2 sliding log, 3 sliding
--            counter, 4 fixed window), period µs, max units, GCRA emission interval µs
--
-- Reply: {now µs, hold end µs (0: no hold in force), hold reason ('' for none),
-- then per limit: remaining, reset µs, free µs}. remaining and reset are
-- computed as decide.lua computes them for a denial: units a call could take
-- now (before any hold), and µs until the limit is back to full. free is the
-- µs until one unit fits, as decide.lua would book it (after the units booked
-- ahead; holds, guards and outside records aside): 0 when one fits now. Window
-- states are read by the readers decide.lua uses (gcra.lua, window_state.lua,
-- sliding_log.lua), and free by its earliest times (quota_time.lua).

local now = now_us()
local hold = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if hold <= now then hold = 0 end
local why = redis.call('GET', KEYS[2]) or ''
local out = {now, hold, why}

for i = 1, #KEYS - 2 do
  local a = 4 * (i - 1)
  local algo, p, m, e = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if not (algo and p and m and e) or p < 1 or m < 1 or e < 1 then
    return redis.error_reply('ERR inspect.lua: limit ' .. i .. ': algorithm, period, max or interval out of range')
  end
  local k = KEYS[2 + i]
  local rem, reset, free = m, 0, now
  if algo == 1 then
    local tat = gcra_read(redis.call('GET', k))
    if not tat then return redis.error_reply('ERR inspect.lua: limit ' .. i .. ': unreadable state') end
    rem, reset = gcra_left(tat, now, m * e, e)
    free = gcra_fits(tat, m * e, e)
  elseif algo == 2 then
    local s = log_read(k, now - p)
    if s.sum > 0 then rem, reset = m - s.sum, s.last + p - now end
    if s.sum >= m then
      -- The first entry still counted whose age-out leaves room for one unit
      -- (earliest_log's, over the counted entries only: nothing is trimmed here).
      local need = s.sum + 1 - m
      free = s.last + p
      local entries = redis.call('ZRANGEBYSCORE', k, '(' .. digits(now - p), '+inf', 'WITHSCORES', 'LIMIT', 0, need)
      for j = 1, #entries, 2 do
        if log_entry(entries[j]) - s.base >= need then free = tonumber(entries[j + 1]) + p; break end
      end
    end
  else
    local s = window_read(redis.call('GET', k), p)
    if not s then return redis.error_reply('ERR inspect.lua: limit ' .. i .. ': unreadable state') end
    rem, reset = window_left(s, p, algo, m, now)
    free = earliest_window({state = s, period = p, max = m, algo = algo, cost = 1, guard = 0, outsideKey = false}, now)
  end
  if rem < 0 then rem = 0 end
  out[#out + 1], out[#out + 2], out[#out + 3] = rem, reset, math.max(free - now, 0)
end
return out
