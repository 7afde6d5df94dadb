-- cache_invalidate_tag.lua: delete up to a batch of a tag set's members, and the set
-- once it is empty.
--
-- KEYS[1]  tag set key (a sorted set of value keys, see cache_set_tagged.lua)
-- ARGV[1]  batch: the most members to delete in this call
--
-- The members are value keys under the tag set's own hash tag, so they sit in its
-- slot. Members whose values already expired are removed without being counted.
-- The caller repeats the call while members are left, so a tag of many members
-- never blocks Redis for long.
--
-- Reply: {deleted, left}: values deleted by this call, members still in the set.

local batch = tonumber(ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, batch - 1)
local deleted = 0
-- unpack is bounded by the Lua C stack: pass at most 256 arguments at a time.
for i = 1, #members, 256 do
  local j = math.min(i + 255, #members)
  deleted = deleted + redis.call('UNLINK', unpack(members, i, j))
  redis.call('ZREM', KEYS[1], unpack(members, i, j))
end
local left = redis.call('ZCARD', KEYS[1])
if left == 0 then
  redis.call('UNLINK', KEYS[1])
end
return {deleted, left}
