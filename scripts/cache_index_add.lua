-- cache_index_add.lua: remember names in an index for at least a TTL.
--
-- KEYS[1]    index key: a sorted set of names scored by the ms time (Redis clock)
--            until which each is remembered
-- ARGV[1]    TTL in ms (> 0)
-- ARGV[2..]  names
--
-- A name's time only ever moves later. Names whose time has passed are pruned, and
-- the index expires when its latest name does.
--
-- Reply: the number of names in the index.

local function d(x) return string.format('%d', x) end

local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local until_ = now + tonumber(ARGV[1])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. d(now))
for i = 2, #ARGV do
  local cur = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not cur or tonumber(cur) < until_ then
    redis.call('ZADD', KEYS[1], d(until_), ARGV[i])
  end
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], d(tonumber(last[2])))
return redis.call('ZCARD', KEYS[1])
