-- quota_charge.lua: prelude (not a script) of decide.lua, lease.lua and
-- wake.lua: the per-limit part of their reply, for a denial (quota_denied) or
-- a grant (quota_charge), after quota_time.lua.
--
-- Each limit has eight values in the reply: remaining, reset µs (until the
-- limit is full again), booking id, mark, and four prior-state values. The
-- last six are those of a booking (a granted reservation), which cancel.lua
-- and wake.lua give back (giveback.lua); 0 otherwise, and a reply that books
-- nothing leaves them out (the short form: two values per limit):
--   booking id  window: the stamp the booking wrote on the limit's state
--               (state.lua); GCRA: the tat it wrote (gcra.lua); sliding log: 0
--   mark        GCRA: the tat written; sliding log: the entry's score; window:
--               the window's count after the booking
--   prior       the state before the booking: GCRA tat, 0, 0, 0; window L, P,
--               pp, c, or -1, 0, 0, 0 when there was none; sliding log 0s

-- quota_reply is a reply of Q's layout: the header, then eight 0s per limit
-- (booking) or two (the short form) for quota_denied or quota_charge to fill.
-- Its size is set once: a Lua table grown value by value rehashes at 8, 16,
-- 32 values.
local function quota_reply(Q, status, wait, by, t, lease, booking)
  return {status, wait, by, t, lease, string.byte(string.rep('\0', (booking and 8 or 2) * Q.n), 1, -1)}
end

-- quota_denied is the reply of a denial (the grant time t would be too late):
-- each limit's remaining and reset at now, charging nothing (short form).
local function quota_denied(Q, now, t, by)
  local out = quota_reply(Q, 0, t - now, by, t, 0)
  for i = 1, Q.n do
    local lim = Q.limits[i]
    local s, p, m, rem, reset = lim.state, lim.period, lim.max, lim.max, 0
    if lim.algo == 1 then
      rem, reset = gcra_left(s, now, m * lim.interval, lim.interval)
    elseif lim.algo == 2 then
      rem = m - s.sum
      if s.sum > 0 then reset = s.last + p - now end
    else
      rem, reset = window_left(s, p, lim.algo, m, now)
    end
    local at = 5 + 2 * (i - 1)
    out[at + 1], out[at + 2] = math.max(rem, 0), reset
  end
  return out
end

-- quota_charge charges every limit its cost at grant time t (a lease's units
-- from t to leaseEnd) and fills in its values in out (quota_reply's, built
-- with the same booking); booking says whether to fill in the booking's (else
-- out is the short form, without them).
local function quota_charge(Q, t, leaseEnd, now, booking, out)
  for i = 1, Q.n do
    local lim = Q.limits[i]
    local s, p, m, c = lim.state, lim.period, lim.max, lim.cost
    local rem, reset, id, mark
    local p1, p2, p3, p4 = 0, 0, 0, 0
    if lim.algo == 1 then
      local tat = gcra_charge(s, leaseEnd, c * lim.interval)
      gcra_write(lim.key, tat, lim.floor, now)
      rem, reset = gcra_left(tat, now, m * lim.interval, lim.interval)
      id, mark, p1 = tat, tat, s
    elseif lim.algo == 2 then
      mark = log_add(lim.key, s, t, c, p, now)
      rem, reset, id = m - (s.sum + c), mark + p - now, 0
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
      p1, p2, p3, p4 = s.L, s.P, s.pp, s.c
    end
    local at = 5 + (booking and 8 or 2) * (i - 1)
    out[at + 1], out[at + 2] = math.max(rem, 0), reset
    if booking then
      out[at + 3], out[at + 4], out[at + 5], out[at + 6], out[at + 7], out[at + 8] = id, mark, p1, p2, p3, p4
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
