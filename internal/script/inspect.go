package script

// Inspect reads, writing nothing, the state of a quota's limits and its hold,
// for operators. See inspect.lua.
var Inspect = mustScript("inspect.lua", append(append([]string{}, stamped...), "outside.lua", "quota_time.lua")...)
