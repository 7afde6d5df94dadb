-- quota_time.lua: prelude (not a script) of decide.lua, lease.lua and
-- wake.lua: the grant time of a quota decision (after quota_layout.lua).
--
-- Every limit's grants are first come first served, so the earliest time a
-- limit can take its cost is monotone: once feasible, feasible at every later
-- time. The grant time is therefore the latest of each limit's earliest time,
-- moved on to a fixed window's next start while it lies in that window's
-- guard (the one exception to monotonicity; see the passes at the end).

-- earliest_log is the earliest µs time ≥ the log's latest entry at which a
-- sliding log lim can take its cost: when the entries still counted leave too
-- little room, the expiry of the oldest ones that free enough.
local function earliest_log(lim)
  local s = lim.state
  local need = s.sum + lim.cost - lim.max
  if need <= 0 then return s.last end
  -- At most need entries (weights ≥ 1), oldest first.
  local entries = redis.call('ZRANGE', lim.key, 0, digits(need - 1), 'WITHSCORES')
  for j = 1, #entries, 2 do
    if log_entry(entries[j]) - s.base >= need then return math.max(s.last, tonumber(entries[j + 1]) + lim.period) end
  end
  return s.last
end

-- earliest_window is the earliest µs time ≥ from at which a fixed window or
-- sliding counter lim can take its cost (outside its guard, and within what
-- its outside record leaves).
local function earliest_window(lim, from)
  local s, p, x = lim.state, lim.period, from
  if x < s.w * p then x = s.w * p end
  -- At most three windows: from the state's window w, window w + 2 is empty
  -- (and a guard is shorter than a window).
  for _ = 1, 3 do
    local w = math.floor(x / p)
    local before, count = 0, 0
    if w == s.w then before, count = s.prev, s.cur elseif w == s.w + 1 then before = s.cur end
    if lim.algo == 4 then before = 0 end
    local room = lim.max
    if lim.outsideKey then room = lim.max - math.min(outside_reserve(lim.outside, w), lim.max - lim.cost) end
    if count + lim.cost <= room then
      if before > 0 then
        -- The counter weighs the window before by the part of it still in the period.
        local need = w * p + math.ceil(p * (before - (lim.max - count - lim.cost)) / before)
        if need > x then x = need end
      end
      if x < (w + 1) * p - lim.guard then return x end
    end
    x = (w + 1) * p
  end
  return x
end

-- quota_time returns the grant time of Q (read by quota_read) at now,
-- and what it waits for: 0 nothing, -j quota j's hold, i limit i.
local function quota_time(Q, now)
  local t, by = math.max(now, Q.notBefore), 0
  if Q.hold > t then t, by = Q.hold, -Q.holdOf end
  local from = t
  for i = 1, Q.n do
    local lim = Q.limits[i]
    local e
    if lim.algo == 1 then
      e = gcra_fits(lim.state, lim.max * lim.interval, lim.cost * lim.interval)
    elseif lim.algo == 2 then
      e = earliest_log(lim)
    else
      e = earliest_window(lim, from)
    end
    if e > t then t, by = e, i end
  end
  -- t may have moved past where a fixed window's guard was checked (a later
  -- limit's time landing in an earlier fixed window's guard): such a limit
  -- then grants at its next window's start instead (its count is then 0, and
  -- every other limit, being monotone, stays feasible). A bounded number of
  -- passes: a move to one window's start may land in another period's guard.
  for _ = 1, 2 * Q.n do
    local moved = false
    for i = 1, Q.n do
      local lim = Q.limits[i]
      if lim.guard > 0 then
        local ends = (math.floor(t / lim.period) + 1) * lim.period
        if t >= ends - lim.guard then t, by, moved = ends, i, true end
      end
    end
    if not moved then break end
  end
  return t, by
end
