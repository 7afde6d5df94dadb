-- keys: {p}a {p}b ; args: 1000000 1 1 0
local a, b, c, d = ARGV[1] + 0, ARGV[2] + 0, ARGV[3] + 0, ARGV[4] + 0 return 1
