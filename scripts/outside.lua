-- outside.lua: prelude (not a script) of the quota scripts and sync.lua, which
-- both read a fixed-window limit's outside record (internal/script prepends it).
--
-- A limit of a quota with Headroom keeps free, in each of its fixed windows,
-- the units that clients outside the fleet are expected to spend there (a
-- script on the same IP): R, learned by sync.lua from the server's counts.
-- Its record, "ow R seen raised quiet B refused", is about window ow:
--   R       the reserve in force in window ow (at most B)
--   seen    the most the server had counted in ow beyond the fleet's grants
--           that it accepted (used less the fleet's own count, less the
--           grants it refused), at any sync so far
--   raised  the units sync.lua added to ow's count (they are the outsiders')
--   quiet   windows in a row in which less than R/2 was seen
--   B       the bound on R (Quota.Headroom of the limit's Rate)
--   refused the units of the fleet's grants in ow the server refused (429):
--           counted by the fleet, never by the server
--
-- outside_roll(R, seen, quiet, B, k) is the reserve k ≥ 1 windows after a
-- window with that record: a window that saw more than R raises R to it; one
-- that saw at least R/2 keeps R; after more than 2 quiet windows R halves
-- each window (a window without any sync is quiet). It returns R and quiet.
local function outside_roll(R, seen, quiet, B, k)
  if seen > R then
    R, quiet = seen, 0
  elseif R > 0 and 2 * seen >= R then
    quiet = 0
  else
    quiet = quiet + 1
    if quiet > 2 then R = math.floor(R / 2) end
  end
  for _ = 2, math.min(k, 32) do
    quiet = quiet + 1
    if quiet > 2 then R = math.floor(R / 2) end
  end
  if k > 32 then R = 0 end
  return math.min(R, B), quiet
end

-- outside_read parses a record v (nil: none): ow, R, seen, raised, quiet, B,
-- refused; nil if unreadable.
local function outside_read(v)
  if not v then return nil end
  local ow, R, seen, raised, quiet, B, refused = string.match(v, '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
  if not ow then return nil end
  return ow + 0, R + 0, seen + 0, raised + 0, quiet + 0, B + 0, refused + 0 -- digits: + 0 is tonumber, cheaper
end

-- outside_reserve is the reserve a record v keeps free in window w: in ow,
-- what of R has not been seen yet (seen units are in the count already:
-- sync.lua raised it); in a later window, the rolled R; else 0.
local function outside_reserve(v, w)
  local ow, R, seen, _, quiet, B = outside_read(v)
  if not ow or w < ow then return 0 end
  if w == ow then return math.max(R - seen, 0) end
  local r = outside_roll(R, seen, quiet, B, w - ow)
  return r
end
