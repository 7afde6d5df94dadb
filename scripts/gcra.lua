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
  -- A tat alone is digits (16 of them, µs, until the year 2286): + 0 reads it
  -- as tonumber would, for fewer instructions, and fails the call (before
  -- any write) on anything else that short; "tat floor" is twice as long.
  if #v < 20 then return v + 0, 0 end
  local tat, floor = string.match(v, '^(%d+) (%d+)$')
  if not tat then return nil end
  return tat + 0, floor + 0
end

-- The GCRA's numbers, all µs: span m·e (the time m units take to come
-- back), inc c·e (what cost c adds to tat).

-- gcra_fits returns the earliest time (µs) at which cost c (inc) fits under
-- tat, for a limit of span.
local function gcra_fits(tat, span, inc) return tat + inc - span end

-- gcra_charge returns the tat after cost c (inc) charged at time t (a lease
-- charges it from its end).
local function gcra_charge(tat, t, inc)
  if tat < t then tat = t end
  return tat + inc
end

-- gcra_left returns the units left under tat at now (one every e µs, a
-- limit of span), and the µs until the limit is full again.
local function gcra_left(tat, now, span, e)
  local ahead = tat - now
  if ahead < 0 then ahead = 0 end
  local rem = math.floor((span - ahead) / e)
  if rem < 0 then rem = 0 end
  return rem, ahead
end

-- gcra_write stores tat (> now) and floor under key k until tat is past, or
-- for px ms when given (a string, at least ttl_ms(tat, now): allow.lua's).
local function gcra_write(k, tat, floor, now, px)
  local v = floor > 0 and string.format('%d %d', tat, floor) or string.format('%d', tat)
  redis.call('SET', k, v, 'PX', px or ttl_ms(tat, now))
end
