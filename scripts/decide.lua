-- decide.lua: check and charge the limits of one or more quotas of one hash
-- slot (one Group), all or nothing, in one call: a decision now (Allow) or a
-- booking up to a max wait ahead (Reserve, Wait).
--
-- KEYS, ARGV[1 .. 3+6n]: the quota layout (quota_layout.lua): token, holds,
--           limit states, outside records; token TTL, holds, not before, limits
-- ARGV[4+6n] max wait µs: 0 grants only now; > 0 books up to that far ahead
--
-- Reply (the layout of every decision script): {status, wait µs, denied by,
-- grant time µs, lease µs, then eight values per limit (quota_charge.lua), or
-- two (remaining, reset µs: the short form) when nothing is booked: a denial,
-- or a grant with max wait 0}.
-- status is 1 granted, 0 denied; wait is the delay until the grant (granted)
-- or the retry-after (denied); denied by is 0, -j for quota j's hold, or the
-- index of the limit that waits longest; grant time is the µs time the units
-- are charged at (on a denial, the earliest time they could be); lease µs is
-- 0. With max wait 0 nothing can be given back (no booking values), and the
-- grant time is 0 unless a window limit is charged (whose window the caller
-- reads from it); a grant's reset is 0 for window limits: it is the end of
-- the grant's window (a period later for the counter) less now = t - wait,
-- which the caller computes. Small integers decode without allocating.

local Q, maxWait, now = quota_start(0)
if not Q then return redis.error_reply('ERR decide.lua: ' .. maxWait) end
if Q.replay then return Q.replay end

local t, by = quota_time(Q, now)
if t - now > maxWait then return quota_denied(Q, now, t, by) end
local booking = maxWait > 0
local out = quota_reply(Q, 1, t - now, 0, t, 0, booking)
quota_charge(Q, t, t, now, booking, out)
local windowed = false
for i = 1, Q.n do
  if Q.limits[i].algo >= 3 then
    windowed = true
    out[5 + (booking and 8 or 2) * (i - 1) + 2] = 0 -- reset: the caller's
  end
end
if maxWait == 0 and not windowed then out[4] = 0 end
quota_remember(Q, out)
return out
