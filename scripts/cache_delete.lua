-- cache_delete.lua: delete values of a group, and take them out of their tag sets.
--
-- KEYS[1..n]     value keys
-- KEYS[n+1..2n]  their tag lists (see cache_set_tagged.lua)
--
-- Each value leaves every tag set its tag list names (Redis deletes a set left
-- empty); then the value and its list are unlinked. Every key shares one hash tag.
--
-- Reply: the number of values deleted.

local n = #KEYS / 2
local deleted = 0
for i = 1, n do
  for _, t in ipairs(redis.call('SMEMBERS', KEYS[n + i])) do
    redis.call('ZREM', t, KEYS[i])
  end
  redis.call('UNLINK', KEYS[n + i])
  deleted = deleted + redis.call('UNLINK', KEYS[i])
end
return deleted
