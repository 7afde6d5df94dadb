-- keys: {p}a {p}b ; args: 1000000 1 1 0
redis.call('SET', KEYS[2], '1796590895107398', 'PX', '1000') return 1
