-- keys: {p}a {p}b ; args: 1000000 1 1 0
local a, b, c, d = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]) return 1
