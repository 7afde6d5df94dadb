// Package middleware keeps HTTP traffic inside rate limits shared by every
// process, with the limits kept in Redis by package limiter.
//
// On the client side, a Transport wraps an http.RoundTripper. Each outgoing
// request that a Rule matches is charged to the rule's quota before it is sent:
// the Transport books the request's turn in Redis and sleeps until it (or, with
// Options.FailFast, refuses at once with a *LimitedError). It then learns from
// the answer: a 429, a 418 or a 503 with Retry-After holds the whole quota in
// Redis, so that every process pauses, not just this one; usage headers (Binance
// X-MBX-USED-WEIGHT-*, the IETF RateLimit fields, X-RateLimit-*) raise our count
// to the server's when the server has counted more. Requests no rule matches go
// straight through.
//
// On the server side, Handler limits incoming requests per key and writes the
// IETF RateLimit and RateLimit-Policy fields, with Retry-After on a 429.
//
// Put every limit an exchange counts for one IP or account into one quota: a
// hold then covers all of them, and each request states its cost in each.
package middleware
