-- keys: {p}a {p}b ; args: 1000000 1 1 0
local function f1(a) return a end
local function f2(a) return a end
local function f3(a) return a end
local function f4(a) return a end
local function f5(a) return a end
local function f6(a) return a end
local function f7(a) return a end
local function f8(a) return a end
return 1
