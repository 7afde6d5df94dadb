-- cache_set_tagged.lua: write values with one TTL and add each to every tag set, in one call.
--
-- KEYS[1..n]    value keys
-- KEYS[n+1..]   tag set keys: sorted sets whose members are value keys, scored by
--               the first ms time (Redis clock) at which that value is gone
-- ARGV[1]       n, the number of values
-- ARGV[2]       TTL in ms; -1 for no expiry
-- ARGV[3..2+n]  the encoded values, in KEYS order
--
-- Each tag set is first pruned of members that have expired, then gets every value
-- key with its expiry, then expires exactly when its latest member does (never,
-- while one member never expires). Every key shares one hash tag.
--
-- Reply: n.

-- Lua 5.1 turns numbers into strings with %.14g: a ms time would lose digits.
local function d(x) return string.format('%d', x) end

local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)

-- now is rounded down to the ms, and Redis drops a key once its expiry time is
-- past: a score of now + ttl + 1 is the first ms the value is gone, never
-- earlier, and members scored at or before now are gone.
local score = '+inf'
if ttl > 0 then score = d(now + ttl + 1) end

for i = 1, n do
  if ttl > 0 then
    redis.call('SET', KEYS[i], ARGV[2 + i], 'PX', ARGV[2])
  else
    redis.call('SET', KEYS[i], ARGV[2 + i])
  end
end

for j = n + 1, #KEYS do
  local t = KEYS[j]
  redis.call('ZREMRANGEBYSCORE', t, '-inf', d(now))
  for i = 1, n do
    redis.call('ZADD', t, score, KEYS[i])
  end
  if redis.call('ZCOUNT', t, '+inf', '+inf') > 0 then
    redis.call('PERSIST', t)
  else
    local last = redis.call('ZRANGE', t, -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', t, d(tonumber(last[2])))
  end
end
return n
