-- keys: {p}h {p}t ; args: 60000000 1000000000 1 10000000 1000000000 1 86400000000 1 86400000
-- The same decision with every limit's state packed into one key, as text
-- (string.match to read it, one string.format to write it).
local p1, m1, c1 = ARGV[1] + 0, ARGV[2] + 0, ARGV[3] + 0
local p2, m2, c2 = ARGV[4] + 0, ARGV[5] + 0, ARGV[6] + 0
local span, inc = ARGV[7] + 0, ARGV[8] + 0
local values = redis.call('MGET', KEYS[1], KEYS[2])
local tm = redis.call('TIME')
local now = tm[1] * 1000000 + tm[2]
local w1, cur1, w2, prev2, cur2, tat, stamp = -1, 0, -1, 0, 0, 0, 0
if values[2] then
  local a, b, c, d, e, f, g = string.match(values[2], '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
  w1, cur1, w2, prev2, cur2, tat, stamp = a + 0, b + 0, c + 0, d + 0, e + 0, f + 0, g + 0
end
local t = now
if values[1] then local h = tonumber(values[1]) if h > t then t = h end end
local w = math.floor(t / p1)
local c = 0
if w == w1 then c = cur1 end
if c + c1 > m1 then return {0, (w + 1) * p1 - now, 1} end
local v = math.floor(t / p2)
local before, cc = 0, 0
if v == w2 then before, cc = prev2, cur2 elseif v == w2 + 1 then before = cur2 end
if cc + c2 + before * (1 - (t - v * p2) / p2) > m2 then return {0, 1, 2} end
local fits = tat + inc - span
if fits > t then return {0, fits - now, 3} end
if tat < t then tat = t end
tat = tat + inc
stamp = math.max(stamp + 1, now)
local nv = string.format('%d %d %d %d %d %d %d', w, c + c1, v, before, cc + c2, tat, stamp)
redis.call('SET', KEYS[2], nv, 'PX', ARGV[9])
return {1, m1 - c - c1, m2 - cc - c2, tat - now}
