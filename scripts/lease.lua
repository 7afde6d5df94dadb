-- lease.lua: take a lease: units of one or more quotas of one hash slot
-- granted now, all or nothing, that the caller spends later, at any time
-- before the lease ends at E = now + lease µs.
--
-- KEYS, ARGV[1 .. 3+6n]: the quota layout (quota_layout.lua)
-- ARGV[4+6n] lease µs (> 0)
--
-- The charge must cover every spending time in [now, E], so it is placed
-- where it stays counted longest: fixed and counter windows end the lease at
-- the window's end (units spent in the window they were charged to); GCRA
-- counts it from E (tat = max(tat, E) + cost); a sliding log cannot hold a
-- charge in the future without breaking first come first served, so with one
-- in the quota the lease ends at once (E = now). The feasibility check is a
-- decision's, at now.
--
-- Reply: decide.lua's layout with max wait 0; a grant's grant time is 0 (it
-- is now) and its lease µs the lease's length E - now; the short form (no
-- booking values).

local Q, lease, now = quota_start(1)
if not Q then return redis.error_reply('ERR lease.lua: ' .. lease) end
if Q.replay then return Q.replay end

local t, by = quota_time(Q, now)
if t > now then return quota_denied(Q, now, t, by) end
local ends = quota_lease_end(Q, t, lease)
local out = quota_reply(Q, 1, 0, 0, 0, ends - t)
quota_charge(Q, t, ends, now, false, out)
quota_remember(Q, out)
return out
