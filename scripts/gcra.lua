-- gcra.lua: not a script; the prelude of quota.lua and allow.lua, the one
-- source of the GCRA's arithmetic (scripts.go prepends it). A limit of m
-- units, one every e µs, keeps its theoretical arrival time tat (µs, Redis's
-- clock) as a string.

-- gcra_fits returns the earliest time (µs) at which cost c fits under tat.
local function gcra_fits(tat, m, e, c) return tat + c * e - m * e end

-- gcra_charge returns the state after c units charged at time t (a lease
-- charges them from its end).
local function gcra_charge(tat, t, e, c)
  if tat < t then tat = t end
  return tat + c * e
end

-- gcra_left returns the units left under tat at now, and the µs until the
-- limit is full again.
local function gcra_left(tat, now, m, e)
  local ahead = tat - now
  if ahead < 0 then ahead = 0 end
  local rem = math.floor((m * e - ahead) / e)
  if rem < 0 then rem = 0 end
  return rem, ahead
end

-- gcra_write stores tat under key k until it is past.
local function gcra_write(k, tat, now)
  redis.call('SET', k, string.format('%d', tat), 'PX', string.format('%d', math.ceil((tat - now) / 1000)))
end
