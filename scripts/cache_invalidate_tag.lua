-- cache_invalidate_tag.lua: delete up to a batch of the values that carry a tag, and
-- the tag set once it is empty.
--
-- KEYS[1]  tag set key (a sorted set of value keys, see cache_set_tagged.lua)
-- ARGV[1]  batch: the most members to handle in this call
-- ARGV[2]  the group's value key prefix ("<prefix>:{<group>}:v:")
-- ARGV[3]  the group's tag list prefix ("<prefix>:{<group>}:l:")
--
-- Every write of a value in a group goes through cache_set_tagged.lua or
-- cache_delete.lua, which take it out of the tag sets it no longer carries, so a
-- member scored after now carries the tag. Members scored at or before now have
-- expired: they are removed without being deleted or counted. Each deleted value
-- also leaves its other tag sets, and its tag list goes. Members and lists share
-- the tag set's hash tag, so they sit in its slot. The caller repeats the call
-- while members are left, so a tag of many members never blocks Redis for long.
--
-- Reply: {deleted, left}: values deleted by this call, members still in the set.

local function d(x) return string.format('%d', x) end

local batch = tonumber(ARGV[1])
local vpre, lpre = ARGV[2], ARGV[3]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', d(now))
local members = redis.call('ZRANGE', KEYS[1], 0, batch - 1)
local deleted = 0
for _, value in ipairs(members) do
  if string.sub(value, 1, #vpre) == vpre then
    local list = lpre .. string.sub(value, #vpre + 1)
    for _, other in ipairs(redis.call('SMEMBERS', list)) do
      if other ~= KEYS[1] then redis.call('ZREM', other, value) end
    end
    redis.call('UNLINK', list)
  end
  deleted = deleted + redis.call('UNLINK', value)
end
-- unpack is bounded by the Lua C stack: pass at most 256 arguments at a time.
for i = 1, #members, 256 do
  redis.call('ZREM', KEYS[1], unpack(members, i, math.min(i + 255, #members)))
end
local left = redis.call('ZCARD', KEYS[1])
if left == 0 then
  redis.call('UNLINK', KEYS[1])
end
return {deleted, left}
