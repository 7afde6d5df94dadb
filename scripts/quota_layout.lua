-- quota_layout.lua: prelude (not a script) of decide.lua, lease.lua and
-- wake.lua: the KEYS and ARGV they share, read in one place, and the read of
-- every state a decision needs.
--
-- KEYS[1]        token key: remembers a call's reply so that a retried call
--                is not charged twice
-- KEYS[1+j]      hold key of quota j, j = 1..h: a µs time (Redis's clock)
--                before which nothing is granted (hold.lua)
-- KEYS[1+h+i]    state key of limit i, i = 1..n (n = 0: only the holds are
--                checked and nothing is charged)
-- KEYS[1+h+n+j]  outside record of the j-th limit ARGV[2] lists (outside.lua)
-- ARGV[1]        token TTL ms; "0" turns retry dedupe off
-- ARGV[2]        "h[ i1 i2 …]": h, the number of hold keys (≥ 1), then the
--                fixed-window limits that keep headroom for clients outside
--                the fleet: such a limit grants in window w only up to its
--                max less its outside record's reserve for w (outside_reserve)
-- ARGV[3]        not before: µs time before which nothing is granted, 0 for
--                none (a charge across groups books each group at one time)
-- ARGV[4+6(i-1) ..] limit i: algorithm (1 GCRA, 2 sliding log, 3 sliding
--                counter, 4 fixed window), period µs, max units, GCRA emission
--                interval µs, cost, guard µs (fixed window: no grant within
--                guard of its window's end; it goes to the next window's start)
-- ARGV[4+6n ..]  the script's own arguments (its header)

-- quota_layout reads KEYS and ARGV into a table; nil and why if they do not fit.
local function quota_layout()
  local hs, listed = string.match(ARGV[2] or '', '^(%d+)(.*)$')
  local h = tonumber(hs)
  local outside, listedCount = nil, 0
  if listed and listed ~= '' then
    outside = {}
    for i in string.gmatch(listed, '%d+') do
      listedCount = listedCount + 1
      outside[tonumber(i)] = listedCount
    end
  end
  local n = #KEYS - 1 - (h or 0) - listedCount
  if not h or h < 1 or n < 0 or #ARGV < 3 + 6 * n then
    return nil, #KEYS .. ' keys and ' .. #ARGV .. ' arguments do not match'
  end
  local Q = {h = h, n = n, tail = 4 + 6 * n, limits = {}, tokenTTL = ARGV[1], dedupe = ARGV[1] ~= '0' and n > 0,
    notBefore = ARGV[3] + 0, replay = false, hold = 0, holdOf = 0}
  for i = 1, n do
    local a = 4 + 6 * (i - 1)
    -- The algorithm by string comparison (interned: no number parsing), and
    -- only the arguments it reads: the interval is GCRA's, the guard a fixed
    -- window's (each number is a strtod). "+ 0" converts as tonumber does,
    -- for fewer instructions, and fails the call (before any write) on a
    -- non-number.
    local name = ARGV[a]
    local algo = name == '1' and 1 or name == '2' and 2 or name == '3' and 3 or name == '4' and 4 or nil
    -- Every field in the constructor: a Lua table grown field by field rehashes.
    local lim = {key = KEYS[1 + h + i], algo = algo, period = ARGV[a + 1] + 0, max = ARGV[a + 2] + 0,
      interval = algo == 1 and ARGV[a + 3] + 0 or 1, cost = ARGV[a + 4] + 0,
      guard = algo == 4 and ARGV[a + 5] + 0 or 0, outsideKey = false, outsideAt = false, outside = false, state = false, floor = 0}
    if not (algo and lim.cost and lim.max and lim.period and lim.interval and lim.guard)
      or lim.cost < 1 or lim.cost > lim.max or lim.period < 1 or lim.interval < 1 or lim.guard < 0 or lim.guard >= lim.period then
      return nil, 'limit ' .. i .. ': algorithm, cost, max, period, interval or guard out of range'
    end
    Q.limits[i] = lim
  end
  if outside then
    for i, j in pairs(outside) do
      if i < 1 or i > n or Q.limits[i].algo ~= 4 then return nil, 'limit ' .. i .. ' has no fixed window to keep headroom in' end
      Q.limits[i].outsideKey, Q.limits[i].outsideAt = KEYS[1 + h + n + j], 1 + h + n + j
    end
  end
  return Q
end

-- quota_remember stores reply out under the call's token (dedupe on).
local function quota_remember(Q, out)
  if not Q.dedupe then return end
  local enc = {}
  for i = 1, #out do enc[i] = digits(out[i]) end
  redis.call('SET', KEYS[1], table.concat(enc, ' '), 'PX', Q.tokenTTL)
end

-- quota_replay returns the reply remembered under the call's token, or nil.
local function quota_replay(v)
  if not v then return nil end
  local out = {}
  for x in string.gmatch(v, '%-?%d+') do out[#out + 1] = tonumber(x) end
  return out
end

-- quota_read reads, with one MGET, the token, the holds, every string state
-- and outside record, then the sliding logs (trimmed to their period), into
-- Q: the remembered reply of a retried call (Q.replay); or the latest hold's
-- end and its quota's index (Q.hold, Q.holdOf) and each limit's state in
-- Q.limits[i].state (gcra_read's tat, with its floor in .floor;
-- window_read's; log_read's). It returns true, or nil and why.
local function quota_read(Q, now)
  -- Every key from the token on (the token only with dedupe on), in KEYS'
  -- order, so no list of names is built: a sliding log's key, a sorted set,
  -- reads as nil. KEYS[k]'s value is values[k - skip].
  local skip = Q.dedupe and 0 or 1
  local values = redis.call('MGET', unpack(KEYS, 1 + skip))
  if Q.dedupe and values[1] then
    Q.replay = quota_replay(values[1])
    return true
  end
  for j = 1, Q.h do
    local v = tonumber(values[1 + j - skip] or '0') or 0
    if v > Q.hold then Q.hold, Q.holdOf = v, j end
  end
  for i = 1, Q.n do
    local lim = Q.limits[i]
    if lim.algo == 1 then
      lim.state, lim.floor = gcra_read(values[1 + Q.h + i - skip])
      if not lim.state then return nil, 'limit ' .. i .. ': unreadable state' end
    elseif lim.algo == 2 then
      redis.call('ZREMRANGEBYSCORE', lim.key, 0, digits(now - lim.period))
      lim.state = log_read(lim.key, now - lim.period)
    else
      lim.state = window_read(values[1 + Q.h + i - skip], lim.period)
      if not lim.state then return nil, 'limit ' .. i .. ': unreadable state' end
    end
    if lim.outsideAt then lim.outside = values[lim.outsideAt - skip] end
  end
  return true
end

-- quota_start reads the layout, the script's own argument ARGV[4+6n] (a
-- number ≥ least), Redis's clock and every state (quota_read). It returns Q,
-- the argument and now; or nil and why.
local function quota_start(least)
  local Q, why = quota_layout()
  if not Q then return nil, why end
  local arg = tonumber(ARGV[Q.tail])
  if not arg or arg < least then return nil, 'ARGV[' .. Q.tail .. '] must be a number ≥ ' .. least end
  local now = now_us()
  local ok, err = quota_read(Q, now)
  if not ok then return nil, err end
  return Q, arg, now
end
