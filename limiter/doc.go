// Package limiter is a distributed rate limiter whose every decision is one Lua
// script call in Redis, in the idiom of golang.org/x/time/rate.
//
// # Where to start
//
// Build one Limiter per Redis client with New, and share it. Most callers
// should use Wait:
//
//	lim := limiter.New(client, limiter.Options{})
//	err := lim.Wait(ctx, limiter.Key("user:42", limiter.PerSecond(10)).Take(1))
//
// Key(key, limit) is the quota of one key and one limit, and Take(n) its
// charge of n units. Allow takes units now or refuses; Reserve books the
// earliest time the units fit and says how long to wait; Wait books and then
// sleeps exactly until its turn. Waiters are served first come first served
// across processes, with no polling. A decision is one Result (Allowed,
// Remaining, RetryAfter, and each limit's state in Limits), from Allow or a
// Reservation, and every bad input is an error wrapping ErrInvalid, returned
// before anything reaches Redis.
//
// # Quotas and charges
//
// A Quota checks and charges several limits together, all or nothing, in the
// same single call: Binance's weight per minute and orders per 10 s, say. A
// Quota is a template: q.For(key) is its instance for one user, account or
// trading pair. Each argument of Allow, Reserve and Wait is a Charge: a quota
// and its Cost (Cost{"weight": 5, "orders": 1}; q.Take(n) takes n of every
// limit). Several charges are decided atomically when their quotas share a
// Group (one Redis Cluster slot), with documented compensation when they do
// not. The limiter owns every window and hold: a Quota's Guard keeps
// fixed-window grants away from their window's end, results carry each
// window's end on Redis's clock, and a Wait that wakes into a hold
// (Limiter.Hold: a 429 or 418 seen by any process) books again after it,
// checked to the microsecond, before it returns. Cancel reports what it gave
// back; Reservation.Sync applies a server's usage count only while the
// charge's window lasts.
//
// The clock is Redis TIME, read inside the script, so client clock skew cannot
// let a limit overshoot. Every key has a TTL: an idle limiter leaves nothing.
//
// # Beyond one round trip per decision
//
// Two modes serve busy processes: a Leaser spends units leased from Redis
// several at a time without a round trip, charged so that the global limit
// still holds; Options.Coalesce merges concurrent identical decisions into
// one script call. Without either, concurrent decisions on a go-redis client
// share round trips: once four of a Limiter's calls are in flight, the next
// go through the client's autopipeliner (go-redis's AsyncAutoPipeline), each
// still its own script call and reply, sent at most once, waited for as
// go-redis waits for a reply. For operators, Inspect reads every quota's state and
// holds, and CheckServer reports Redis settings that can make a limit
// overshoot.
package limiter
