-- cache_set_tagged.lua: write values with one TTL and exactly the given tags, in one call.
--
-- KEYS[1..n]      value keys
-- KEYS[n+1..2n]   their tag lists: for value i, a set of the tag set keys it carries
-- KEYS[2n+1..]    tag set keys: sorted sets whose members are value keys, scored by
--                 the first ms time (Redis clock) at which that value is gone
-- ARGV[1]         n, the number of values
-- ARGV[2]         TTL in ms; -1 for no expiry
-- ARGV[3..2+n]    the encoded values, in KEYS order
--
-- A value carries the tags of its last write and no others: each value first leaves
-- every tag set its tag list names (Redis deletes a set left empty), then is written,
-- and its tag list is replaced by the given tag sets, expiring with the value. With no
-- tag set keys this is a plain write in a group that drops the value's old tags.
-- Each given tag set is pruned of members that have expired, gets every value key
-- with its expiry, then expires exactly when its latest member does (never, while
-- one member never expires). Every key shares one hash tag.
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

local given = {}
for j = 2 * n + 1, #KEYS do given[KEYS[j]] = true end

for i = 1, n do
  local value, list = KEYS[i], KEYS[n + i]
  for _, old in ipairs(redis.call('SMEMBERS', list)) do
    if not given[old] then redis.call('ZREM', old, value) end
  end
  redis.call('DEL', list)
  if ttl > 0 then
    redis.call('SET', value, ARGV[2 + i], 'PX', ARGV[2])
  else
    redis.call('SET', value, ARGV[2 + i])
  end
  for j = 2 * n + 1, #KEYS do redis.call('SADD', list, KEYS[j]) end
  if ttl > 0 and #KEYS > 2 * n then redis.call('PEXPIRE', list, ARGV[2]) end
end

for j = 2 * n + 1, #KEYS do
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
