-- sync.lua: raise a limit's count to what the server says it has counted
-- (usage headers such as X-MBX-USED-WEIGHT-1m). Never lowers it.
--
-- KEYS[1]  state key of the limit (as in decide.lua)
-- ARGV[1..5] algorithm (1 GCRA, 2 sliding log, 3 sliding counter, 4 fixed window),
--          period µs, max units, GCRA emission interval µs, units the server has counted
-- ARGV[6]  optional: the µs time t of the charge the server's count answers
--          (Reservation.Sync), 0 for none. The count applies only while that
--          charge still counts, on Redis's clock: fixed and counter windows while
--          now is in t's window, GCRA and sliding log while now < t + period.
-- KEYS[2], ARGV[7]  optional, fixed window only: the limit's outside record
--          (outside.lua) and the bound B on its reserve. The server's count
--          beyond the fleet's own grants in the current window is what clients
--          outside the fleet spent there: the record keeps the most seen, and
--          the units this script adds to the count for it. The count is then
--          raised to the fleet's grants plus what others were seen to spend,
--          not merely to the server's count: grants still on their way to the
--          server are not in the server's count, and must stay in ours.
-- ARGV[8]  optional, with KEYS[2]: units of the charge the server refused
--          (a 429): they are added to the record's refused units, so that
--          they are not taken for grants the server counted, and nothing
--          else changes (used is 0). Reply 0.
--
-- A GCRA or window state that holds charges still to come (bookings, leases)
-- gets its floor raised, whether or not the count was raised: to the tat it
-- leaves (gcra.lua), or to the stamp it writes (state.lua). The server's count
-- may rest on those charges' units, so their give-back (giveback.lua) must not
-- take it below.
--
-- Reply: 1 if our count was raised, 0 if it already covered the server's, or
-- the charge's window has passed.

local now = now_us()
local algo, p, m, e, used = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if not (algo and p and m and e and used) or p < 1 or e < 1 then return redis.error_reply('ERR sync.lua: bad arguments') end
used = math.min(used, m)
local k = KEYS[1]
local t = tonumber(ARGV[6] or '0') or 0
local refusedNow = tonumber(ARGV[8] or '0') or 0
if t > 0 then
  if algo == 1 or algo == 2 then
    if now >= t + p then return 0 end
  elseif math.floor(now / p) ~= math.floor(t / p) then
    return 0
  end
end

if algo == 1 then
  local tat = gcra_read(redis.call('GET', k))
  if not tat then return redis.error_reply('ERR sync.lua: unreadable state') end
  local want = now + used * e
  if want <= tat then
    if tat > now then redis.call('SET', k, digits(tat) .. ' ' .. digits(tat), 'KEEPTTL') end
    return 0
  end
  gcra_write(k, want, want, now)
  return 1
elseif algo == 2 then
  redis.call('ZREMRANGEBYSCORE', k, 0, digits(now - p))
  local s = log_read(k, now - p)
  if used <= s.sum then return 0 end
  log_add(k, s, now, used - s.sum, p, now)
  return 1
end

-- Fixed window and counter.
local s = window_read(redis.call('GET', k), p)
if not s then return redis.error_reply('ERR sync.lua: unreadable state') end
local w = math.floor(now / p)
-- The record of window w, rolled over from an earlier one.
local rec
if KEYS[2] and algo == 4 then
  local B = tonumber(ARGV[7])
  local ow, R, seen, raised, quiet, _, refused = outside_read(redis.call('GET', KEYS[2]))
  if not ow or ow > w then ow, R, seen, raised, quiet, refused = w, 0, 0, 0, 0, 0 end
  if ow < w then
    R, quiet = outside_roll(R, seen, quiet, B, w - ow)
    seen, raised, refused = 0, 0, 0
  end
  local counted = 0 -- window w's count: the fleet's grants and what was raised
  if s.w == w then counted = s.cur elseif s.w == w + 1 then counted = s.prev end
  raised = math.min(raised, counted) -- a Reset (or a lost state) forgot them
  refused = math.min(refused + refusedNow, counted - raised)
  if refusedNow == 0 then seen = math.max(seen, used - (counted - raised - refused)) end
  rec = {w, math.min(R, B), seen, raised, quiet, B, refused}
end
-- save writes the record, adding the units this call raised the count by.
local function save(add)
  if not rec then return end
  rec[4] = rec[4] + add
  local f = {}
  for j = 1, 7 do f[j] = digits(rec[j]) end
  redis.call('SET', KEYS[2], table.concat(f, ' '), 'PX', ttl_ms(now + 32 * p, now))
end
-- covered: the state already covers the server's count; a state holding
-- charges still to come takes the floor (see the header).
local function covered()
  if s.L > now then
    local next = next_stamp(s.stamp, s.floor, now)
    window_write(k, s.L, s.P, s.pp, s.c, s, nil, now, next)
  end
  return 0
end
if refusedNow > 0 then
  save(0)
  return 0
end
if s.w > w then
  save(0)
  return covered()
end
local before, count, L = 0, 0, now
if s.w == w then before, count, L = s.prev, s.cur, math.max(s.L, now) elseif s.w == w - 1 then before = s.cur end
local estimate = count
if algo == 3 then estimate = before * (1 - (now - w * p) / p) + count end
local target = used
if rec then target = math.min(math.max(used, count - rec[4] + rec[3]), m) end
if target <= estimate then
  save(0)
  return covered()
end
save(math.ceil(target - estimate))
count = count + math.ceil(target - estimate)
local next = next_stamp(s.stamp, s.floor, now)
window_write(k, L, p, before, count, s, window_ends(L, p, algo), now, next)
return 1
