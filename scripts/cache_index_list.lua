-- cache_index_list.lua: the names an index still remembers.
--
-- KEYS[1]  index key (see cache_index_add.lua)
--
-- Read only: names whose time has passed are left for the next add to prune.
--
-- Reply: the names, in order of their time.

local function d(x) return string.format('%d', x) end

local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], d(now), '+inf')
