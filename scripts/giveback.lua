-- giveback.lua: prelude (not a script) of cancel.lua and wake.lua, which both
-- give a booking back (after state.lua and the state readers).
--
-- giveback(k, algo, p, e, c, t, b, now) gives back the cost c of a booking at
-- µs time t on the limit whose state key is k (algorithm algo, period p µs,
-- GCRA interval e µs), given b, the booking values decide.lua replied for it
-- (quota_charge.lua): {booking id, mark, four prior-state values}. It returns
-- the units given back. The anchor is x/time/rate's CancelAt: give back what
-- later bookings have not already claimed, and never what could let a limit
-- overshoot.
--   Nothing when the booking id is at or below the state's floor (state.lua,
--     gcra.lua): a Sync since the booking may rest on its units, or (windows)
--     the state is newer than the booking.
--   GCRA and windows: while the state is still the one the booking wrote (it
--     is the last charge, and nothing was given back since), the state before
--     it is restored exactly: c units.
--   GCRA (mark: the tat the booking wrote): bookings after it claimed
--     (tat - mark) / e units of c; the rest is given back by moving tat down.
--     Nothing when tat - mark is not a whole number of intervals (a later
--     booking was pushed by a hold or another limit) or tat is below mark
--     (Reset, or given back already).
--   Sliding log (mark: the µs score of the booking's entry): the entry is
--     removed and the running totals of the entries after it lowered: c units.
--   Fixed window (mark: the window's count after the booking): c units come
--     off the count of the booking's window while that window is the state's
--     latest; a state already in a later window takes no new grant in the
--     booking's window, so nothing comes back.
--   Sliding counter: as the fixed window, and also while the booking's window
--     is the state's previous one (it still weighs on the current one).
local function giveback(k, algo, p, e, c, t, b, now)
  local id, mark, p1, p2, p3, p4 = b[1], b[2], b[3], b[4], b[5], b[6]
  if algo == 2 then
    local hit = redis.call('ZRANGEBYSCORE', k, digits(mark), digits(mark))
    if not hit[1] or select(2, log_entry(hit[1])) ~= c then return 0 end
    redis.call('ZREM', k, hit[1])
    local later = redis.call('ZRANGEBYSCORE', k, '(' .. digits(mark), '+inf', 'WITHSCORES')
    for j = 1, #later, 2 do
      local total, weight = log_entry(later[j])
      redis.call('ZREM', k, later[j])
      redis.call('ZADD', k, later[j + 1], digits(total - c) .. ':' .. digits(weight))
    end
    return c
  end
  local v = redis.call('GET', k)
  if algo == 1 then
    local tat, floor = gcra_read(v)
    if not tat or id <= floor then return 0 end
    if tat == mark then
      if p1 > now then gcra_write(k, p1, floor, now) else redis.call('DEL', k) end
      return c
    end
    if tat < mark or tat <= now or (tat - mark) % e ~= 0 then return 0 end
    local back = c - (tat - mark) / e
    if back <= 0 then return 0 end
    gcra_write(k, tat - back * e, floor, now)
    return back
  end
  local s = v and window_read(v, p)
  if not s or id <= s.floor or s.P ~= p then return 0 end
  -- The booking wrote "L p pp mark": L = t, or the prior L when that was later
  -- in the same window; pp the prior's count of the window before t's (see
  -- quota_charge.lua). While the state is still that, restore the prior state.
  local bw = math.floor(t / p)
  local wantL, wantPP = t, nil
  if p1 > t and math.floor(p1 / p) == bw then wantL = p1 end
  if p2 == p then
    local pw = math.floor(p1 / p)
    if bw == pw then wantPP = p3 elseif bw == pw + 1 then wantPP = p4 else wantPP = 0 end
  elseif p2 == 0 then
    wantPP = 0 -- no prior state
  end
  if s.L == wantL and s.c == mark and s.pp == wantPP then
    local ends = p2 > 0 and window_ends(p1, p2, algo) or 0
    if ends > now then window_write(k, p1, p2, p3, p4, s, ends, now) else redis.call('DEL', k) end
    return c
  end
  if bw == s.w and s.c >= mark and s.c >= c then
    window_write(k, s.L, s.P, s.pp, s.c - c, s, nil, now)
  elseif algo == 3 and bw == s.w - 1 and s.pp >= mark and s.pp >= c then
    window_write(k, s.L, s.P, s.pp - c, s.c, s, nil, now)
  else
    return 0
  end
  return c
end
