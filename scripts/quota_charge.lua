-- quota_charge.lua: prelude (not a script) of decide.lua, lease.lua and
-- wake.lua: the per-limit part of their reply, for a denial (quota_left) or
-- a grant (quota_charge), after quota_time.lua.
--
-- Each limit adds eight values to the reply: remaining, reset µs (until the
-- limit is full again), booking id, mark, and four prior-state values. The
-- last six are those of a booking (a granted reservation), which cancel.lua
-- and wake.lua give back (giveback.lua); 0 otherwise:
--   booking id  window: the stamp the booking wrote on the limit's state
--               (state.lua); GCRA: the tat it wrote (gcra.lua); sliding log: 0
--   mark        GCRA: the tat written; sliding log: the entry's score; window:
--               the window's count after the booking
--   prior       the state before the booking: GCRA tat, 0, 0, 0; window L, P,
--               pp, c, or -1, 0, 0, 0 when there was none; sliding log 0s

-- quota_left adds each limit's remaining and reset at now, charging nothing.
local function quota_left(Q, now, out)
  for i = 1, Q.n do
    local lim = Q.limits[i]
    local s, p, m, rem, reset = lim.state, lim.period, lim.max, lim.max, 0
    if lim.algo == 1 then
      rem, reset = gcra_left(s.tat, now, m, lim.interval)
    elseif lim.algo == 2 then
      rem = m - s.sum
      if s.sum > 0 then reset = s.last + p - now end
    else
      rem, reset = window_left(s, p, lim.algo, m, now)
    end
    local at = #out
    out[at + 1], out[at + 2] = math.max(rem, 0), reset
    for j = 3, 8 do out[at + j] = 0 end
  end
end

-- quota_denied is the reply of a denial: the grant time t would be too late.
local function quota_denied(Q, now, t, by)
  local out = {0, t - now, by, t, 0}
  quota_left(Q, now, out)
  return out
end

-- quota_charge charges every limit its cost at grant time t (a lease's units
-- from t to leaseEnd) and adds its values; booking says whether to add the
-- booking's (else they are 0).
local function quota_charge(Q, t, leaseEnd, now, booking, out)
  for i = 1, Q.n do
    local lim = Q.limits[i]
    local s, p, m, c = lim.state, lim.period, lim.max, lim.cost
    local at = #out
    local rem, reset, id, mark
    if lim.algo == 1 then
      local tat = gcra_charge(s.tat, leaseEnd, lim.interval, c)
      gcra_write(lim.key, tat, s.floor, now)
      rem, reset = gcra_left(tat, now, m, lim.interval)
      id, mark = tat, tat
      out[at + 5], out[at + 6], out[at + 7], out[at + 8] = s.tat, 0, 0, 0
    elseif lim.algo == 2 then
      mark = log_add(lim.key, s, t, c, p, now)
      rem, reset, id = m - (s.sum + c), mark + p - now, 0
      out[at + 5], out[at + 6], out[at + 7], out[at + 8] = 0, 0, 0, 0
    else
      local w = math.floor(t / p)
      local before, count = 0, 0
      if w == s.w then before, count = s.prev, s.cur elseif w == s.w + 1 then before = s.cur end
      count = count + c
      local L = math.max(t, leaseEnd - 1)
      if w == s.w and s.L > L then L = s.L end
      local ends = window_ends(t, p, lim.algo)
      id = window_write(lim.key, L, p, before, count, s, ends, now)
      rem = 0
      if w == math.floor(now / p) then
        rem = m - count
        if lim.algo == 3 then rem = math.floor(m - before * (1 - (now - w * p) / p) - count) end
      end
      reset, mark = ends - now, count
      out[at + 5], out[at + 6], out[at + 7], out[at + 8] = s.L, s.P, s.pp, s.c
    end
    out[at + 1], out[at + 2], out[at + 3], out[at + 4] = math.max(rem, 0), reset, id, mark
    if not booking then
      for j = 3, 8 do out[at + j] = 0 end
    end
  end
end

-- quota_lease_end is the end of a lease of lease µs granted at t: clipped to
-- the end of every fixed or counter window, and to t by a sliding log, which
-- cannot hold a charge in the future without breaking first come first served.
local function quota_lease_end(Q, t, lease)
  local ends = t + lease
  for i = 1, Q.n do
    local lim = Q.limits[i]
    if lim.algo == 2 then
      ends = t
    elseif lim.algo ~= 1 then
      ends = math.min(ends, (math.floor(t / lim.period) + 1) * lim.period)
    end
  end
  return ends
end
