-- keys: {p}h {p}g1 ; args: 1000000 1 1
local tm = redis.call('TIME')
local v = redis.call('MGET', KEYS[1], KEYS[2])
redis.call('SET', KEYS[2], '1796590895107398', 'PX', '1000')
return 1
