-- keys: {p}a {p}b ; args: 1000000 1 1 0
local v = redis.call('MGET', KEYS[1], KEYS[2]) return 1
