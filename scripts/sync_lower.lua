-- sync_lower.lua: sync a fixed-window limit whose server count goes down
-- (limiter.Limit.Lowers: Binance's unfilled order count falls when orders
-- fill) to the count the server put in its answer to one booked request, R:
-- raise it or lower it, never below what the server may still count.
--
-- KEYS[1]  state key of the limit (a fixed window, window_state.lua)
-- KEYS[2]  its answer record (below)
-- ARGV[1..3]  period µs p, max units m, units X the server has counted
-- ARGV[4..6]  R's booking: its grant time t µs, its booking id b (the stamp
--          it wrote, quota_charge.lua), its cost c
--
-- The answer record of window w, "w adj K a1 k1 b1 a2 k2 b2 …":
--   adj    the units this script added to w's count (less those it took off)
--   K      the units of the bookings whose answers were synced here ("acked")
--   a k b  the newest acks (at most 64), oldest first: the stamp a of the
--          ack, K after it, and the booking id b it acked
-- An ack's stamp a is that of the state's latest write at the ack (its own,
-- when it writes): a booking made before the ack has a stamp at most a, one
-- made after it a larger one (state.lua), so "acked before b was booked" is
-- a < b.
--
-- The count goes down to X + pending when that is lower; otherwise it only
-- rises, to X, as sync.lua's (X + pending may count twice a booking X
-- counts already: acked after R was booked, yet taken before R; raised to
-- it, a fleet whose orders do not fill would be throttled below the limit).
--
-- Why the count written, X + pending, cannot let the server's count overshoot:
-- the count in R's answer counts R and every request the server took before
-- it (less fills). A booking acked before R was booked had its answer
-- back before R was sent: the server took it before R, and X counts it. Every
-- other booking of window w, R excepted (booked before R and not acked by
-- then, or booked after R, acked or not), may reach the server after R: all
-- of them are in pending = booked - K(b) - c, where booked = count - adj is
-- the units w's bookings hold (net of give-backs; units another script
-- added, sync.lua's, count as booked: more kept) and K(b) the acked units
-- before b (the newest ack before b in the record; 0 when the record no
-- longer goes back that far, which only keeps more). Grants made after this
-- call are charged to the count as ever. So the count stays at or above
-- what the server will count, less what others (outside the fleet) spend
-- after R: as with a count that only rises. A booking whose answer never
-- comes (lost, not synced) stays in pending until w ends.
-- The write raises the state's floor to its own stamp, as sync.lua's, also
-- when the count stays while the state holds charges still to come: no
-- booking before it is given back (giveback.lua). It assumes R reached the
-- server in t's window (Quota.Guard, as every fixed window here).
-- Nothing changes when t's window is not now's (as sync.lua), or when the
-- state has moved to a later window or another period. When the state and
-- the record disagree (booked below K(b) + c: a Reset or a lost state), the
-- count only rises, to X, as sync.lua's.
--
-- Reply: 1 raised, 2 lowered, 0 unchanged (R acked, if it was not yet).

local now = now_us()
local p, m, used, t, b, c = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if not (p and m and used and t and b and c) or p < 1 or m < 1 or used < 0 or t < 1 or b < 1 or c < 1 then
  return redis.error_reply('ERR sync_lower.lua: bad arguments')
end
local w = math.floor(now / p)
if math.floor(t / p) ~= w then return 0 end
local k = KEYS[1]
local s = window_read(redis.call('GET', k), p)
if not s then return redis.error_reply('ERR sync_lower.lua: unreadable state') end
if s.w ~= w or s.P ~= p or not s.stamp then return 0 end

-- The record of window w (a fresh one for a new window).
local adj, K, acks = 0, 0, {}
local v = redis.call('GET', KEYS[2])
if v then
  local f = {}
  for x in string.gmatch(v, '%-?%d+') do f[#f + 1] = tonumber(x) end
  if #f < 3 or (#f - 3) % 3 ~= 0 then return redis.error_reply('ERR sync_lower.lua: unreadable record') end
  if f[1] == w then
    adj, K = f[2], f[3]
    for j = 4, #f, 3 do acks[#acks + 1] = {f[j], f[j + 1], f[j + 2]} end
  end
end
local acked, Kb = false, 0
for j = #acks, 1, -1 do
  if acks[j][3] == b then acked = true end
  if Kb == 0 and acks[j][1] < b then Kb = acks[j][2] end
end

local count = s.cur
local pending = count - adj - Kb - c
local target, reply = count, 0
if pending >= 0 and used + pending < count then
  target, reply = used + pending, 2
elseif math.min(used, m) > count then
  target, reply = math.min(used, m), 1
end
local ackStamp = s.stamp
if reply ~= 0 or s.L > now then
  -- The floor rises to this write, as sync.lua's (also when the count stays,
  -- while the state holds charges still to come): no booking before it is
  -- given back, so no give-back takes the count below what it rests on.
  local stamp = next_stamp(s.stamp, s.floor, now)
  if reply == 0 then target = count end
  window_write(k, s.L, p, s.pp, target, s, nil, now, stamp)
  adj, ackStamp = adj + target - count, stamp
end
if not acked then
  K = K + c
  acks[#acks + 1] = {ackStamp, K, b}
end
local out = {digits(w), digits(adj), digits(K)}
for j = math.max(1, #acks - 63), #acks do
  out[#out + 1] = digits(acks[j][1]) .. ' ' .. digits(acks[j][2]) .. ' ' .. digits(acks[j][3])
end
redis.call('SET', KEYS[2], table.concat(out, ' '), 'PX', ttl_ms((w + 1) * p, now))
return reply
