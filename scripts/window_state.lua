-- window_state.lua: prelude (not a script) of every limiter script that
-- reads fixed-window or sliding-counter states: the one reader and writer of
-- their format (after state.lua).
--
-- A state "L P pp c stamp floor": L the µs time of the latest unit charged
-- (or the latest time a leased unit may be spent), P the period µs it was
-- written under, pp and c the units of L's P-window before and of that
-- window, stamp and floor as state.lua says.

-- next_stamp returns the stamp and floor of a write at now after a state
-- stamped stamp with floor (stamp nil: a new state).
local function next_stamp(stamp, floor, now)
  if not stamp then return now, now - 1 end
  return math.max(stamp + 1, now), floor
end

-- window_read reads a state v (nil: none) on the grid of period p into a
-- table: L, P, pp, c, stamp, floor as stored, then w = floor(L / p) and prev,
-- cur: the units the state counts in p's windows w-1 and w; nil if v is
-- unreadable. A state of another period P (the limit's Period changed) is
-- moved onto p's grid at L: all its units lie in [start of L's P-window - P,
-- L], so windows w-1 and w each count every unit of the P-windows they
-- overlap, and later windows none. It never undercounts a window a grant can
-- still fall in (of what the state still holds: it expires with the old
-- period's windows).
local function window_read(v, p)
  if not v then return {L = -1, P = 0, pp = 0, c = 0, stamp = nil, floor = 0, w = -1, prev = 0, cur = 0} end
  local L, P, pp, c, stamp, floor = string.match(v, '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
  if not L then return nil end
  local s = {L = L + 0, P = P + 0, pp = pp + 0, c = c + 0, stamp = stamp + 0, -- digits: + 0 is tonumber, cheaper
    floor = floor + 0, w = 0, prev = 0, cur = 0}
  s.w, s.prev, s.cur = math.floor(s.L / p), s.pp, s.c
  if s.P ~= p then
    local start = math.floor(s.L / s.P) * s.P
    local function units(j)
      local u = 0
      if j * p < start and (j + 1) * p > start - s.P then u = u + s.pp end
      if j * p <= s.L and (j + 1) * p > start then u = u + s.c end
      return u
    end
    s.prev, s.cur = units(s.w - 1), units(s.w)
  end
  return s
end

-- window_write stores "L P pp c" under key k until µs time ends (nil: keep
-- the key's TTL), after the state s (window_read's) it replaces, with floor
-- (nil: s's); it returns the new stamp.
local function window_write(k, L, P, pp, c, s, ends, now, floor)
  local stamp, kept = next_stamp(s.stamp, s.floor, now)
  local v = string.format('%d %d %d %d %d %d', L, P, pp, c, stamp, floor or kept)
  if ends then redis.call('SET', k, v, 'PX', ttl_ms(ends, now)) else redis.call('SET', k, v, 'KEEPTTL') end
  return stamp
end

-- window_ends is the µs time a state of L's window ends (on period p) stops
-- counting: the window's end, a period later for the sliding counter (algorithm 3).
local function window_ends(L, p, algo)
  local ends = (math.floor(L / p) + 1) * p
  if algo == 3 then ends = ends + p end
  return ends
end

-- window_left returns the units a window state s (window_read's, on period
-- p; algorithm algo, max m) leaves at now, and the µs until it is full again.
local function window_left(s, p, algo, m, now)
  local w, rem, reset = math.floor(now / p), m, 0
  if s.w == w then rem = m - s.cur elseif s.w > w then rem = 0 end
  if algo == 3 and (s.w == w or s.w == w - 1) then
    -- The counter weighs the window before by the part of it still in the period.
    local before, count = s.prev, s.cur
    if s.w == w - 1 then before, count = s.cur, 0 end
    rem = math.floor(m - before * (1 - (now - w * p) / p) - count)
  end
  if s.w >= w - 1 then reset = math.max(window_ends(s.L, p, algo) - now, 0) end
  return math.max(rem, 0), reset
end
