-- giveback.lua: not a script; the prelude of cancel.lua and quota.lua (its
-- wake-up), which both give a booking back (scripts.go prepends it).
--
-- giveback(k, al, p, e, c, t, mark, p1, p2, p3, p4, now) gives back the cost c
-- of a booking at µs time t on the limit whose state key is k (algorithm al,
-- period p µs, GCRA interval e µs), given what quota.lua replied for it: its
-- mark and the four prior-state values p1..p4. It returns the units given
-- back. The anchor is x/time/rate's CancelAt: give back what later bookings
-- have not already claimed, and never what could let a limit overshoot.
--   GCRA and windows: while the state is still the one the booking wrote (it
--     is the last charge, and nothing was given back since), the state before
--     it is restored exactly: c units.
--   GCRA (mark: the tat the booking wrote): bookings after it claimed
--     (tat - mark) / e units of c; the rest is given back by moving tat down.
--     Nothing when tat - mark is not a whole number of intervals (a later
--     booking was pushed by a hold or another limit, or sync.lua moved tat)
--     or tat is below mark (Reset, or given back already).
--   Sliding log (mark: the µs score of the booking's entry): the entry is
--     removed and the running totals of the entries after it lowered: c units.
--   Fixed window (mark: the window's count after the booking): c units come off
--     the count of the booking's window while that window is the state's
--     latest; a state already in a later window takes no new grant in the
--     booking's window, so nothing comes back.
--   Sliding counter: as the fixed window, and also while the booking's window
--     is the state's previous one (it still weighs on the current one).
--   A window state sync.lua marked (" s") gives nothing: the server's count it
--   recorded may rest on the booking's units.
local function giveback(k, al, p, e, c, t, mark, p1, p2, p3, p4, now)
  local function d(x) return string.format('%d', x) end
  if al == 1 then
    local tat = tonumber(redis.call('GET', k) or '0')
    if tat == mark then
      if p1 > now then
        redis.call('SET', k, d(p1), 'PX', d(math.ceil((p1 - now) / 1000)))
      else
        redis.call('DEL', k)
      end
      return c
    end
    if tat < mark or tat <= now or (tat - mark) % e ~= 0 then return 0 end
    local back = c - (tat - mark) / e
    if back <= 0 then return 0 end
    tat = tat - back * e
    redis.call('SET', k, d(tat), 'PX', d(math.ceil((tat - now) / 1000)))
    return back
  elseif al == 2 then
    local hit = redis.call('ZRANGEBYSCORE', k, d(mark), d(mark))
    if not hit[1] then return 0 end
    local cl, w = string.match(hit[1], '^(%d+):(%d+)$')
    if tonumber(w) ~= c then return 0 end
    redis.call('ZREM', k, hit[1])
    local later = redis.call('ZRANGEBYSCORE', k, '(' .. d(mark), '+inf', 'WITHSCORES')
    for j = 1, #later, 2 do
      local lc, lw = string.match(later[j], '^(%d+):(%d+)$')
      redis.call('ZREM', k, later[j])
      redis.call('ZADD', k, later[j + 1], d(tonumber(lc) - c) .. ':' .. lw)
    end
    return c
  end
  local v = redis.call('GET', k)
  if not v then return 0 end
  local L, P, pp, cc = string.match(v, '^(%d+) (%d+) (%d+) (%d+)$')
  if not L then return 0 end -- marked by sync.lua, or unreadable
  L, P, pp, cc = tonumber(L), tonumber(P), tonumber(pp), tonumber(cc)
  if P ~= p then return 0 end
  -- The booking wrote "L p pp mark": L = t, or the prior L when that was later
  -- in the same window; pp the prior's count of the window before t's (see
  -- quota.lua). While the state is still that, restore the prior state.
  local sw, bw = math.floor(L / p), math.floor(t / p)
  local want, wpp = t, nil
  if p1 > t and math.floor(p1 / p) == bw then want = p1 end
  if p2 == p then
    local pw = math.floor(p1 / p)
    if bw == pw then wpp = p3 elseif bw == pw + 1 then wpp = p4 else wpp = 0 end
  elseif p2 == 0 then
    wpp = 0 -- no prior state
  end
  if L == want and cc == mark and pp == wpp then
    local ends = 0
    if p2 > 0 then
      ends = (math.floor(p1 / p2) + 1) * p2
      if al == 3 then ends = ends + p2 end
    end
    if ends > now then
      redis.call('SET', k, d(p1) .. ' ' .. d(p2) .. ' ' .. d(p3) .. ' ' .. d(p4), 'PX', d(math.ceil((ends - now) / 1000)))
    else
      redis.call('DEL', k)
    end
    return c
  end
  if bw == sw and cc >= mark and cc >= c then
    cc = cc - c
  elseif al == 3 and bw == sw - 1 and pp >= mark and pp >= c then
    pp = pp - c
  else
    return 0
  end
  redis.call('SET', k, d(L) .. ' ' .. d(P) .. ' ' .. d(pp) .. ' ' .. d(cc), 'KEEPTTL')
  return c
end
