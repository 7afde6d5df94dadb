-- sliding_log.lua: prelude (not a script) of every limiter script that reads
-- a sliding log (after state.lua): the one reader of its format. A log is a
-- sorted set of members "C:w", w an entry's weight and C the running total of
-- weight up to it, scored by unique µs times.

-- log_entry parses a member into its running total and weight.
local function log_entry(member)
  local total, weight = string.match(member, '^(%d+):(%d+)$')
  if not total then error('unreadable sliding log entry ' .. member) end
  return total + 0, weight + 0 -- digits: + 0 is tonumber, cheaper
end

-- log_read reads the entries of log k scored after µs time from: sum (their
-- weight), last (the latest score), total (the latest running total) and base
-- (the running total before the first); all 0 when there are none.
local function log_read(k, from)
  local s = {sum = 0, last = 0, total = 0, base = 0}
  local first = redis.call('ZRANGEBYSCORE', k, '(' .. digits(from), '+inf', 'LIMIT', 0, 1)
  if not first[1] then return s end
  local latest = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
  local total, weight = log_entry(first[1])
  s.base, s.total, s.last = total - weight, log_entry(latest[1]), latest[2] + 0
  s.sum = s.total - s.base
  return s
end

-- log_add adds an entry of weight w at score µs (after the log s, log_read's)
-- to log k of period p, and returns its score: the latest score + 1 when
-- score is not later.
local function log_add(k, s, score, w, p, now)
  if score <= s.last then score = s.last + 1 end
  redis.call('ZADD', k, digits(score), digits(s.total + w) .. ':' .. digits(w))
  redis.call('PEXPIRE', k, ttl_ms(score + p, now))
  return score
end
