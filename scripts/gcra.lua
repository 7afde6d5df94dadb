-- gcra.lua: prelude (not a script) of allow.lua, batch.lua and the quota
-- scripts, the one source of the GCRA (after state.lua). A limit of m units,
-- one every e µs, keeps its theoretical arrival time tat (µs, Redis's clock)
-- in the state "tat", or "tat floor" once sync.lua has set a floor. A GCRA
-- state needs no stamp (state.lua): tat only grows while bookings are made
-- and never goes below the floor when one is given back, so a booking's id
-- is the tat it wrote, and those at or below the floor are not given back.

-- gcra_read parses a state v (nil or false: none) into tat and floor; nil if
-- v is unreadable.
local function gcra_read(v)
  if not v then return 0, 0 end
  local tat = tonumber(v)
  if tat then return tat, 0 end
  local floor
  tat, floor = string.match(v, '^(%d+) (%d+)$')
  if not tat then return nil end
  return tonumber(tat), tonumber(floor)
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
  local ahead = tat - now
  if ahead < 0 then ahead = 0 end
  local rem = math.floor((m * e - ahead) / e)
  if rem < 0 then rem = 0 end
  return rem, ahead
end

-- gcra_write stores tat (> now) and floor under key k until tat is past, or
-- for px ms when given (a string, at least ttl_ms(tat, now): allow.lua's).
local function gcra_write(k, tat, floor, now, px)
  local v = floor > 0 and string.format('%d %d', tat, floor) or string.format('%d', tat)
  redis.call('SET', k, v, 'PX', px or ttl_ms(tat, now))
end
