-- state.lua: prelude (not a script) of every limiter script: the clock, and
-- the stamp that every window state ends with (internal/script prepends it;
-- a GCRA state needs none, see gcra.lua).
--
-- A window state ends with "stamp floor":
--   stamp  the state's write number: each write's stamp is larger than the
--          one before it and at least the Redis µs time of the write, so a
--          state written anew (after a Reset or its expiry) never reuses one.
--          A booking's id is the stamp it wrote (quota_charge.lua).
--   floor  bookings whose id is at or below the floor are never given back
--          (giveback.lua): sync.lua raises it to its own stamp (the server's
--          count may rest on those bookings' units), and a new state starts
--          with floor = stamp - 1 (older ids belong to a state since gone).

-- Lua 5.1 turns numbers into strings with %.14g: a µs time would lose digits.
local function digits(x) return string.format('%d', x) end

-- now_us is Redis's clock, µs.
local function now_us()
  local tm = redis.call('TIME')
  return tm[1] * 1000000 + tm[2] -- strings coerced: cheaper than tonumber
end

-- ttl_ms is the PX of a key that must live until µs time ends (≥ 1 ms).
local function ttl_ms(ends, now)
  local ms = math.ceil((ends - now) / 1000)
  if ms < 1 then ms = 1 end
  return string.format('%d', ms)
end
