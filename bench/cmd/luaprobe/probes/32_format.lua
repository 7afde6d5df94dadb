-- keys: {p}a {p}b ; args: 1000000 1 1 0
local s = string.format('%d', 1796590895107398) return 1
