-- quota.lua: check and charge the limits of one or more quotas of one hash
-- slot (one Group), all or nothing, in one call.
--
-- KEYS[1]      hold key of quota 1: string, µs time (Redis's clock) before which
--              nothing is granted (429/418 holds, hold.lua)
-- KEYS[2]      token key: remembers this call's reply so a retried call is not charged twice
-- KEYS[1+j]    hold key of quota j, j = 2..h
-- KEYS[1+h+i]  state key of limit i, i = 1..n (n = 0: only holds are checked, nothing
--              is charged: a call that must not go out during a hold, and costs nothing)
-- KEYS[1+h+n+j] outside record of the j-th limit ARGV[5] lists (outside.lua)
-- ARGV[1]      max wait µs: 0 grants only now (Allow); > 0 reserves up to that far ahead
-- ARGV[2]      token TTL ms; "0" turns retry dedupe off
-- ARGV[3]      lease µs: 0 for a decision; > 0 takes a lease (see below)
-- ARGV[4]      not before: µs time before which nothing is granted, 0 for none
--              (a charge across groups books each group at one time)
-- ARGV[5]      "h[ i1 i2 …]": h, the number of hold keys (≥ 1), then the fixed-window
--              limits that keep headroom for clients outside the fleet: each
--              i's outside record is a key after the state keys, in this order.
--              Such a limit grants in window w only up to its max less the
--              record's reserve for w (outside_reserve).
-- ARGV[6+6(i-1) ..] for limit i: algorithm (1 GCRA, 2 sliding log, 3 sliding counter,
--              4 fixed window), period µs, max units, GCRA emission interval µs, cost,
--              guard µs (fixed window: no grant within guard of its window's end;
--              it goes to the next window's start)
-- ARGV[6+6n ..] optional, one of:
--              R > 1 (one GCRA limit, one hold): identical Allow decisions
--                coalesced into this call, decided in order (see below);
--              wake-up of a booking made by this script: its grant time t, then
--                per limit its mark and four prior-state values (5n values).
--                If no hold ends after both t and now (a hold over by now is over,
--                whether or not its key has expired), nor is t before not-before,
--                nor is now within the guard of (or past) the end of t's window
--                for a fixed window limit, the booking stands: the reply is
--                {2, max(t - now, 0), 0, t, then 0, 0, 0 per limit} and nothing is
--                written. Otherwise the booking is given back (giveback.lua) and
--                the call decides anew (after the hold, outside the guard): the
--                usual reply.
--
-- States: GCRA "tat"; fixed window and counter "L P p c": L the µs time of the
-- latest unit charged (or the latest time a leased unit may be spent), P the
-- period µs it was written under, p and c the counts of windows w-1 and w, where
-- w = floor(L / P); sliding log a sorted set of members "C:w" scored by unique
-- µs times, C the running total of weight. Token, holds and every string state
-- are read with one MGET.
--
-- Every limit's grants are first come first served, so the earliest time a limit
-- can take its cost is monotone: once feasible, feasible at every later time. The
-- grant time is therefore the latest of each limit's earliest time, moved on
-- to a fixed window's next start while it lies in that window's guard (the
-- one exception to monotonicity; see the passes after the limits' loop).
--
-- Reply: {granted, wait µs, denied by, grant time µs, then per limit: remaining,
-- reset µs, mark}. wait is the delay until the grant (granted) or the retry-after
-- (denied); denied by is 0, -j for quota j's hold, or the index of the limit that
-- waits longest; mark identifies this charge for Cancel (GCRA: the tat written;
-- sliding log: the entry's score; windows: the window's count after it).
-- With max wait 0 (Allow) nothing can be cancelled: marks are 0 and so is the
-- grant time unless a fixed or counter limit is charged (whose window end the
-- caller reads from it), small integers the client decodes without allocating.
-- A grant (no lease) replies reset 0 for fixed and counter limits: it is the
-- end of t's window (a period later for the counter) less now = t - wait, which
-- the client computes.
-- A granted reservation (max wait > 0, no lease) adds, per limit, four values:
-- the limit's state before the booking (GCRA: tat, 0, 0, 0; window: L, P, p, c,
-- or -1, 0, 0, 0 when there was none; sliding log: 0, 0, 0, 0), which
-- giveback.lua restores.
--
-- A lease is a grant whose units the client spends later, at any time before the
-- lease ends at E = t + lease. The charge must cover every spending time in
-- [t, E], so it is placed where it stays counted longest: fixed and counter
-- windows end the lease at the window's end (units spent in the window they were
-- charged to); GCRA counts it from E (tat = max(tat, E) + cost); a sliding log
-- cannot hold a charge in the future without breaking first come first served,
-- so with one in the quota the lease ends at once (E = t). The feasibility check
-- is the usual one at t, the earliest spending time. A granted lease replies
-- E - t (µs) in place of the grant time.

-- Coalesced reply: {granted count g, then for the decisions after the g-th: wait,
-- denied by; 0; remaining and reset of the first granted decision (decision i
-- has c·(i-1) fewer remaining and c·e·(i-1) µs more reset); 0; remaining and
-- reset after the g grants}. The first g of the R decisions are granted: they
-- are identical, so once one does not fit, none after it does.

-- Lua 5.1 turns numbers into strings with %.14g: a µs time would lose digits.
local function d(x) return string.format('%d', x) end

-- win reads a fixed or counter state v under period p as {w, p, c, l, P, sp,
-- sc} (l, P, sp, sc: the stored fields, for Cancel); nil if v is unreadable.
-- See window_state (window_state.lua, prepended to this script).
local function win(v, p)
  if not v then return {w = -1, p = 0, c = 0, l = -1, P = 0, sp = 0, sc = 0} end
  local L, P, pp, cc, w, prev, cur = window_state(v, p)
  if not L then return nil end
  return {w = w, p = prev, c = cur, l = L, P = P, sp = pp, sc = cc}
end

local hs, listed = string.match(ARGV[5], '^(%d+)(.*)$')
local h = tonumber(hs)
local outs = {} -- limit index → KEYS index of its outside record
local no = 0
for i in string.gmatch(listed or '', '%d+') do
  no = no + 1
  outs[tonumber(i)] = no
end
local n = #KEYS - 1 - (h or 0) - no
if not h or h < 1 or n < 0 or #ARGV < 5 + 6 * n then
  return redis.error_reply('ERR quota.lua: ' .. #KEYS .. ' keys and ' .. #ARGV .. ' arguments do not match')
end
for i, j in pairs(outs) do
  if i < 1 or i > n or ARGV[6 + 6 * (i - 1)] ~= '4' then
    return redis.error_reply('ERR quota.lua: limit ' .. i .. ' has no fixed window to keep headroom in')
  end
  outs[i] = 1 + h + n + j
end
local tail = 6 + 6 * n
local wake = #ARGV == tail + 5 * n
local dedupe = ARGV[2] ~= '0' and n > 0 -- a call that charges nothing needs no dedupe
local notBefore = tonumber(ARGV[4]) or 0
-- remember stores a reply under the call's token (dedupe on).
local function remember(out)
  local enc = {}
  for i = 1, #out do enc[i] = d(out[i]) end
  redis.call('SET', KEYS[2], table.concat(enc, ' '), 'PX', ARGV[2])
end
-- Fast path: one GCRA limit under one hold (the commonest call) without the
-- general machinery's tables. The GCRA is gcra.lua's, as below.
if n == 1 and h == 1 and not wake and ARGV[6] == '1' then
  local mv = redis.call('MGET', KEYS[1], KEYS[3], dedupe and KEYS[2] or KEYS[1])
  if dedupe and mv[3] then
    local out = {}
    for x in string.gmatch(mv[3], '%-?%d+') do out[#out + 1] = tonumber(x) end
    return out
  end
  local tm = redis.call('TIME')
  local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
  local maxwait, lease, m, e, c = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
  local hold, tat = tonumber(mv[1] or '0'), tonumber(mv[2] or '0')
  local reps = tonumber(ARGV[tail] or '1')
  if reps > 1 then
    -- Decision i fits while base + i·c·e - m·e <= now.
    local base, g = math.max(tat, now), 0
    if hold <= now then g = math.max(0, math.min(reps, math.floor((now - base + m * e) / (c * e)))) end
    local last = tat
    if g > 0 then
      last = base + g * c * e
      gcra_write(KEYS[3], last, now)
    end
    local t, by = now, 0
    if hold > t then t, by = hold, -1 end
    local ei = last + c * e - m * e
    if ei > t then t, by = ei, 1 end
    local after = math.max(last - now, 0)
    local out = {g, t - now, by, 0, math.floor((m * e - (base + c * e - now)) / e), base + c * e - now, 0,
      math.max(math.floor((m * e - after) / e), 0), after}
    if dedupe then remember(out) end
    return out
  end
  local t, by = now, 0
  if notBefore > t then t = notBefore end
  if hold > t then t, by = hold, -1 end
  local ei = gcra_fits(tat, m, e, c)
  if ei > t then t, by = ei, 1 end
  if t - now > maxwait then
    local rem, reset = gcra_left(tat, now, m, e)
    return {0, t - now, by, t, rem, reset, 0}
  end
  local old = tat
  tat = gcra_charge(tat, t + lease, e, c)
  gcra_write(KEYS[3], tat, now)
  local rem = gcra_left(tat, now, m, e)
  local out = {1, t - now, 0, t, rem, tat - now, tat}
  if maxwait == 0 then out[4], out[7] = 0, 0 end
  if lease > 0 then out[4] = lease end
  if maxwait > 0 and lease == 0 then
    out[8], out[9], out[10], out[11] = old, 0, 0, 0
    if dedupe then remember(out) end
    return out
  end
  if dedupe then
    redis.call('SET', KEYS[2], d(out[1]) .. ' ' .. d(out[2]) .. ' 0 ' .. d(out[4]) .. ' ' .. d(rem) .. ' ' .. d(out[6]) .. ' ' .. d(out[7]), 'PX', ARGV[2])
  end
  return out
end

local function skey(i) return KEYS[1 + h + i] end
local function holdKey(j) if j == 1 then return KEYS[1] end return KEYS[1 + j] end

-- replay decodes a reply remembered under the call's token.
local function replay(v)
  local out = {}
  for x in string.gmatch(v, '%-?%d+') do out[#out + 1] = tonumber(x) end
  return out
end
if wake and dedupe then
  local prev = redis.call('GET', KEYS[2])
  if prev then return replay(prev) end
end

local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])

if wake then
  -- Wake-up of a booking at bt: it stands unless a hold placed since ends after
  -- it and is not over yet, it must move to not-before (another group's
  -- booking), or it woke too late for its fixed window.
  local bt = tonumber(ARGV[tail])
  local late = notBefore > bt
  for j = 1, h do
    local v = tonumber(redis.call('GET', holdKey(j)) or '0')
    if v > bt and v > now then late = true end
  end
  for i = 1, n do
    -- A fixed window's booking woken within its guard of (or past) its
    -- window's end would be counted in the next window: book again.
    local a = 6 + 6 * (i - 1)
    local p = tonumber(ARGV[a + 1])
    if ARGV[a] == '4' and now + tonumber(ARGV[a + 5]) >= (math.floor(bt / p) + 1) * p then late = true end
  end
  if not late then
    local out = {2, math.max(bt - now, 0), 0, bt}
    for _ = 1, n do out[#out + 1], out[#out + 2], out[#out + 3] = 0, 0, 0 end
    return out
  end
  for i = 1, n do
    local a, b = 6 + 6 * (i - 1), tail + 1 + 5 * (i - 1)
    local g = {}
    for j = 0, 4 do g[j + 1] = tonumber(ARGV[b + j]) end
    giveback(skey(i), tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), bt,
      g[1], g[2], g[3], g[4], g[5], now)
  end
end

local mk, at = {}, {}
for j = 1, h do mk[j] = holdKey(j) end
if dedupe then mk[h + 1] = KEYS[2] end
for i = 1, n do
  if ARGV[6 + 6 * (i - 1)] ~= '2' then
    mk[#mk + 1] = skey(i)
    at[i] = #mk
  end
end
local ot = {} -- limit index → index in mv of its outside record
for i, k in pairs(outs) do
  mk[#mk + 1] = KEYS[k]
  ot[i] = #mk
end
local mv = redis.call('MGET', unpack(mk))
if dedupe and mv[h + 1] then return replay(mv[h + 1]) end

local maxwait, lease = tonumber(ARGV[1]), tonumber(ARGV[3])

local t0, hold, hj = math.max(now, notBefore), 0, 0
for j = 1, h do
  local v = tonumber(mv[j] or '0')
  if v > hold then hold, hj = v, j end
end
local t, by = t0, 0
if hold > t0 then t, by = hold, -hj end
t0 = t

local algo, period, max, iv, cost, guard, st = {}, {}, {}, {}, {}, {}, {}
local windowed = false

for i = 1, n do
  local a = 6 + 6 * (i - 1)
  local al, p, m, e, c, gd = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  if not (c and m and p and e and gd) or c < 1 or c > m or p < 1 or e < 1 or gd < 0 or gd >= p then
    return redis.error_reply('ERR quota.lua: limit ' .. i .. ': cost, max, period, interval or guard out of range')
  end
  if al ~= 4 then gd = 0 end
  algo[i], period[i], max[i], iv[i], cost[i], guard[i] = al, p, m, e, c, gd
  local s, ei
  if al == 1 then
    -- GCRA: state is the theoretical arrival time.
    s = tonumber(mv[at[i]] or '0')
    ei = gcra_fits(s, m, e, c)
  elseif al == 2 then
    local k = skey(i)
    redis.call('ZREMRANGEBYSCORE', k, 0, d(now - p))
    local f = redis.call('ZRANGE', k, 0, 0)
    s = {sum = 0, last = 0, c = 0}
    if f[1] then
      local l = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
      local cf, wf = string.match(f[1], '(%d+):(%d+)')
      local cl = tonumber(string.match(l[1], '(%d+):'))
      s.base = tonumber(cf) - tonumber(wf)
      s.sum, s.last, s.c = cl - s.base, tonumber(l[2]), cl
    end
    ei = s.last
    local need = s.sum + c - m
    if need > 0 then
      -- The oldest entries whose expiry frees enough: at most need of them (weights ≥ 1).
      local es = redis.call('ZRANGE', k, 0, d(need - 1), 'WITHSCORES')
      for j = 1, #es, 2 do
        if tonumber(string.match(es[j], '(%d+):')) - s.base >= need then
          ei = math.max(s.last, tonumber(es[j + 1]) + p)
          break
        end
      end
    end
  else
    -- Sliding counter (3) and fixed window (4).
    windowed = true
    s = win(mv[at[i]], p)
    if not s then return redis.error_reply('ERR quota.lua: limit ' .. i .. ': unreadable state') end
    local x = t0
    if x < s.w * p then x = s.w * p end
    -- At most three windows: from the state's window w, window w + 2 is empty
    -- (and a guard is shorter than a window).
    for _ = 1, 3 do
      local w = math.floor(x / p)
      local pp, cc = 0, 0
      if w == s.w then pp, cc = s.p, s.c elseif w == s.w + 1 then pp = s.c end
      if al == 4 then pp = 0 end
      local room = m
      if ot[i] then room = m - math.min(outside_reserve(mv[ot[i]], w), m - c) end
      if cc + c <= room then
        if pp > 0 then
          local need = w * p + math.ceil(p * (pp - (m - cc - c)) / pp)
          if need > x then x = need end
        end
        if x < (w + 1) * p - gd then break end
      end
      x = (w + 1) * p
    end
    ei = x
  end
  st[i] = s
  if ei > t then t, by = ei, i end
end

-- t may have moved past where a fixed window's guard was checked (a later
-- limit's time landing in an earlier fixed window's guard): such a limit then
-- grants at its next window's start instead (its count is then 0, and every
-- other limit, being monotone, stays feasible). A bounded number of passes: a
-- move to one window's start may land in another period's guard.
if windowed and n > 1 then
  for _ = 1, 2 * n do
    local moved = false
    for i = 1, n do
      local p, gd = period[i], guard[i]
      if gd > 0 then
        local e = (math.floor(t / p) + 1) * p
        if t >= e - gd then t, by, moved = e, i, true end
      end
    end
    if not moved then break end
  end
end

local wait = t - now
if wait > maxwait then
  local out = {0, wait, by, t}
  for i = 1, n do
    local s, p, m, e, rem, reset = st[i], period[i], max[i], iv[i], 0, 0
    if algo[i] == 1 then
      rem, reset = gcra_left(s, now, m, e)
    elseif algo[i] == 2 then
      rem = m - s.sum
      if s.sum > 0 then reset = s.last + p - now end
    else
      local w = math.floor(now / p)
      if s.w == w then rem = m - s.c elseif s.w < w then rem = m end
      if algo[i] == 3 and (s.w == w or s.w == w - 1) then
        local pp, cc = s.p, s.c
        if s.w == w - 1 then pp, cc = s.c, 0 end
        rem = math.floor(m - pp * (1 - (now - w * p) / p) - cc)
      end
      if s.w >= w - 1 then reset = (s.w + 1 + (algo[i] == 3 and 1 or 0)) * p - now end
      if reset < 0 then reset = 0 end
    end
    if rem < 0 then rem = 0 end
    out[#out + 1], out[#out + 2], out[#out + 3] = rem, reset, 0
  end
  -- A wake-up refused here gave its booking back: a retry must not again.
  if wake and dedupe then remember(out) end
  return out
end

-- The lease's end: clipped to the end of every fixed or counter window, and to
-- t by a sliding log (see the header).
local leaseEnd = t + lease
for i = 1, n do
  if algo[i] == 2 then
    leaseEnd = t
  elseif algo[i] ~= 1 then
    leaseEnd = math.min(leaseEnd, (math.floor(t / period[i]) + 1) * period[i])
  end
end

local out = {1, wait, 0, t}
for i = 1, n do
  local k, s, p, m, e, c = skey(i), st[i], period[i], max[i], iv[i], cost[i]
  local rem, reset, mark
  if algo[i] == 1 then
    local tat = gcra_charge(s, leaseEnd, e, c)
    gcra_write(k, tat, now)
    rem = gcra_left(tat, now, m, e)
    reset, mark = tat - now, tat
  elseif algo[i] == 2 then
    local sc = t
    if sc <= s.last then sc = s.last + 1 end
    local cl = s.c + c
    redis.call('ZADD', k, d(sc), d(cl) .. ':' .. d(c))
    redis.call('PEXPIRE', k, d(math.ceil((sc + p - now) / 1000)))
    rem = m - (s.sum + c)
    reset, mark = sc + p - now, sc
  else
    local w = math.floor(t / p)
    local pp, cc = 0, 0
    if w == s.w then pp, cc = s.p, s.c elseif w == s.w + 1 then pp = s.c end
    cc = cc + c
    local L = math.max(t, leaseEnd - 1)
    if w == s.w and s.l > L then L = s.l end
    local ends = (w + 1) * p
    if algo[i] == 3 then ends = ends + p end
    redis.call('SET', k, d(L) .. ' ' .. d(p) .. ' ' .. d(pp) .. ' ' .. d(cc), 'PX', d(math.ceil((ends - now) / 1000)))
    if w == math.floor(now / p) then
      rem = m - cc
      if algo[i] == 3 then rem = math.floor(m - pp * (1 - (now - w * p) / p) - cc) end
    else
      rem = 0
    end
    reset, mark = ends - now, cc
  end
  if rem < 0 then rem = 0 end
  out[#out + 1], out[#out + 2], out[#out + 3] = rem, reset, mark
end

if maxwait == 0 then
  if not windowed then out[4] = 0 end
  for i = 1, n do out[4 + 3 * i] = 0 end
end
if lease > 0 then
  out[4] = leaseEnd - t
else
  -- A window limit's reset follows from t and wait: left to the client.
  for i = 1, n do
    if algo[i] == 3 or algo[i] == 4 then out[3 + 3 * i] = 0 end
  end
end
if maxwait > 0 and lease == 0 then
  -- The states before the booking, for giveback.lua (see Reply above).
  for i = 1, n do
    local p1, p2, p3, p4 = 0, 0, 0, 0
    if algo[i] == 1 then
      p1 = st[i]
    elseif algo[i] ~= 2 then
      local s = st[i]
      p1, p2, p3, p4 = s.l, s.P, s.sp, s.sc
    end
    out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = p1, p2, p3, p4
  end
end

if dedupe then remember(out) end
return out
