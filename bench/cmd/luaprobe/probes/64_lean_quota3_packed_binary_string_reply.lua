-- keys: {p}h {p}r ; args: 60000000 1000000000 1 10000000 1000000000 1 86400000000 1 86400000
-- The same, and its reply a packed string instead of a table.
local p1, m1, c1 = ARGV[1] + 0, ARGV[2] + 0, ARGV[3] + 0
local p2, m2, c2 = ARGV[4] + 0, ARGV[5] + 0, ARGV[6] + 0
local span, inc = ARGV[7] + 0, ARGV[8] + 0
local values = redis.call('MGET', KEYS[1], KEYS[2])
local tm = redis.call('TIME')
local now = tm[1] * 1000000 + tm[2]
local w1, cur1, w2, prev2, cur2, tat, stamp = -1, 0, -1, 0, 0, 0, 0
if values[2] then w1, cur1, w2, prev2, cur2, tat, stamp = struct.unpack('<ddddddd', values[2]) end
local t = now
if values[1] then local h = tonumber(values[1]) if h > t then t = h end end
-- fixed window
local w = math.floor(t / p1)
local c = 0
if w == w1 then c = cur1 end
if c + c1 > m1 then return {0, (w + 1) * p1 - now, 1} end
-- counter
local v = math.floor(t / p2)
local before, cc = 0, 0
if v == w2 then before, cc = prev2, cur2 elseif v == w2 + 1 then before = cur2 end
if cc + c2 + before * (1 - (t - v * p2) / p2) > m2 then return {0, 1, 2} end
-- gcra
local fits = tat + inc - span
if fits > t then return {0, fits - now, 3} end
if tat < t then tat = t end
tat = tat + inc
stamp = math.max(stamp + 1, now)
local nv = struct.pack('<ddddddd', w, c + c1, v, before, cc + c2, tat, stamp)
redis.call('SET', KEYS[2], nv, 'PX', ARGV[9])
return struct.pack("<ddd", m1 - c - c1, m2 - cc - c2, tat - now)
