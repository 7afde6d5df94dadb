-- gcra.lua: prelude (not a script) of allow.lua, batch.lua and the quota
-- scripts, the one source of the GCRA (after state.lua). A limit of m units,
-- one every e µs, keeps its theoretical arrival time tat (µs, Redis's clock)
-- in the state "tat stamp floor" (state.lua).

-- gcra_read parses a state v (nil: none) into tat, stamp, floor (stamp nil
-- for none); nil if v is unreadable.
local function gcra_read(v)
  if not v then return 0, nil, 0 end
  local tat, stamp, floor = string.match(v, '^(%d+) (%d+) (%d+)$')
  if not tat then return nil end
  return tonumber(tat), tonumber(stamp), tonumber(floor)
end

-- gcra_fits returns the earliest time (µs) at which cost c fits under tat.
local function gcra_fits(tat, m, e, c) return tat + c * e - m * e end

-- gcra_charge returns the tat after c units charged at time t (a lease
-- charges them from its end).
local function gcra_charge(tat, t, e, c)
  if tat < t then tat = t end
  return tat + c * e
end

-- gcra_left returns the units left under tat at now, and the µs until the
-- limit is full again.
local function gcra_left(tat, now, m, e)
  local ahead = math.max(tat - now, 0)
  return math.max(math.floor((m * e - ahead) / e), 0), ahead
end

-- gcra_write stores tat (> now) under key k until it is past, after a state
-- stamped stamp with floor; it returns the new stamp.
local function gcra_write(k, tat, stamp, floor, now)
  stamp, floor = next_stamp(stamp, floor, now)
  redis.call('SET', k, digits(tat) .. ' ' .. digits(stamp) .. ' ' .. digits(floor), 'PX', ttl_ms(tat, now))
  return stamp
end
