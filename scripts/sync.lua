-- sync.lua: raise a limit's count to what the server says it has counted
-- (usage headers such as X-MBX-USED-WEIGHT-1m). Never lowers it.
--
-- KEYS[1]  state key of the limit (as in quota.lua)
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
-- Reply: 1 if our count was raised, 0 if it already covered the server's, or
-- the charge's window has passed.

local function d(x) return string.format('%d', x) end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local al, p, m, e, used = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if used > m then used = m end
local k = KEYS[1]
local t = tonumber(ARGV[6] or '0') or 0
local refusedNow = tonumber(ARGV[8] or '0') or 0
if t > 0 then
  if al == 1 or al == 2 then
    if now >= t + p then return 0 end
  elseif math.floor(now / p) ~= math.floor(t / p) then
    return 0
  end
end

if al == 1 then
  local tat = tonumber(redis.call('GET', k) or '0')
  local want = now + used * e
  if want <= tat then
    -- Covered, maybe by a booking not yet due: move tat 1 µs so that the
    -- booking's Cancel (giveback.lua: all of it only from the tat it wrote,
    -- part of it only whole intervals past it) cannot undo what the server
    -- just reported.
    if tat > now then redis.call('SET', k, d(tat + 1), 'KEEPTTL') end
    return 0
  end
  -- Bookings still to come queue on tat in whole intervals; a give-back of
  -- one of them (giveback.lua) takes back only what is whole intervals past
  -- its mark, so keep want off that grid: it cannot lower the server's count.
  if tat > now and (want - tat) % e == 0 and e > 1 then want = want + 1 end
  redis.call('SET', k, d(want), 'PX', d(math.ceil((want - now) / 1000)))
  return 1
elseif al == 2 then
  redis.call('ZREMRANGEBYSCORE', k, 0, d(now - p))
  local sum, last, cl = 0, 0, 0
  local f = redis.call('ZRANGE', k, 0, 0)
  if f[1] then
    local l = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
    local cf, wf = string.match(f[1], '(%d+):(%d+)')
    cl = tonumber(string.match(l[1], '(%d+):'))
    sum, last = cl - (tonumber(cf) - tonumber(wf)), tonumber(l[2])
  end
  if used <= sum then return 0 end
  local w = used - sum
  local sc = now
  if sc <= last then sc = last + 1 end
  redis.call('ZADD', k, d(sc), d(cl + w) .. ':' .. d(w))
  redis.call('PEXPIRE', k, d(math.ceil((sc + p - now) / 1000)))
  return 1
end

-- Fixed window and counter: state "L P p c" as in quota.lua, read by the same
-- rules (window_state, window_state.lua, prepended to this script).
local v = redis.call('GET', k)
local sw, sp, sc, sl = -1, 0, 0, -1
if v then
  local L, P, pp, cc
  L, P, pp, cc, sw, sp, sc = window_state(v, p)
  if not L then return redis.error_reply('ERR sync.lua: unreadable state') end
  sl = L
end
-- A state holding a charge still to come (a booking, a lease) that already
-- covers the server's count is marked: Cancel restores only an unmarked state
-- it wrote, so it cannot undo what the server just reported.
local function covered()
  if sl > now and not string.find(v, ' s$') then redis.call('SET', k, v .. ' s', 'KEEPTTL') end
  return 0
end
local w = math.floor(now / p)
-- learn: the record of window w, rolled over from an earlier one.
local rec
if KEYS[2] and al == 4 then
  local B = tonumber(ARGV[7])
  local ow, R, seen, raised, quiet, _, refused = outside_read(redis.call('GET', KEYS[2]))
  if not ow or ow > w then ow, R, seen, raised, quiet, refused = w, 0, 0, 0, 0, 0 end
  if ow < w then
    R, quiet = outside_roll(R, seen, quiet, B, w - ow)
    seen, raised, refused = 0, 0, 0
  end
  local counted = 0 -- window w's count: the fleet's grants and what was raised
  if sw == w then counted = sc elseif sw == w + 1 then counted = sp end
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
  for j = 1, 7 do f[j] = d(rec[j]) end
  redis.call('SET', KEYS[2], table.concat(f, ' '), 'PX', d(math.ceil(32 * p / 1000)))
end
if refusedNow > 0 then
  save(0)
  return 0
end
if sw > w then
  save(0)
  return covered()
end
local pp, cc, L = 0, 0, now
if sw == w then pp, cc, L = sp, sc, math.max(sl, now) elseif sw == w - 1 then pp = sc end
local est = cc
if al == 3 then est = pp * (1 - (now - w * p) / p) + cc end
local target = used
if rec then target = math.min(math.max(used, cc - rec[4] + rec[3]), m) end
if target <= est then
  save(0)
  return covered()
end
save(math.ceil(target - est))
cc = cc + math.ceil(target - est)
local ends = (w + 1) * p
if al == 3 then ends = ends + p end
-- Charges still to come in this window: mark the state (as covered() does),
-- so that their give-back cannot take the server's count below what it said.
local mark = ''
if L > now then mark = ' s' end
redis.call('SET', k, d(L) .. ' ' .. d(p) .. ' ' .. d(pp) .. ' ' .. d(cc) .. mark, 'PX', d(math.ceil((ends - now) / 1000)))
return 1
