-- keys: {p}a {p}b ; args: 1000000 1 1 0
local v = redis.call('GET', KEYS[2]) return 1
