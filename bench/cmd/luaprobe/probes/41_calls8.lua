-- keys: {p}a {p}b ; args: 1000000 1 1 0
local function f(a) return a end
local x = f(1) x = f(x) x = f(x) x = f(x) x = f(x) x = f(x) x = f(x) x = f(x)
return 1
