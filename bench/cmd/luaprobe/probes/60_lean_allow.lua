-- keys: {p}h {p}a1 ; args: 60000000 1 60000
-- The least a GCRA Allow under a hold does (allow.lua's work, inline, no
-- floor, no Lua functions): the base the lean quota probes below are set against.
local span, inc = ARGV[1] + 0, ARGV[2] + 0
local values = redis.call('MGET', KEYS[1], KEYS[2])
local tm = redis.call('TIME')
local now = tm[1] * 1000000 + tm[2]
local tat = values[2] and values[2] + 0 or 0
local t = now
if values[1] then local h = tonumber(values[1]) if h > t then t = h end end
local fits = tat + inc - span
if fits > t then return now - fits end
if tat < t then tat = t end
tat = tat + inc
redis.call('SET', KEYS[2], string.format('%d', tat), 'PX', ARGV[3])
return tat - now
