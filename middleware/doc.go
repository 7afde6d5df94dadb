// Package middleware keeps HTTP traffic inside rate limits shared by every
// process, with the limits kept in Redis by package limiter. It turns
// requests into charges and answers into holds and usage syncs; it computes
// no window and no hold of its own: the limiter decides when a request may
// go, on Redis's clock.
//
// On the client side, a Transport wraps an http.RoundTripper. Each outgoing
// request that a Rule matches is charged before it is sent: to the rule's
// Quota and Cost, or to the quotas and costs the rule's Charges computes from
// the request (and a copy of its body) — a quota template applied to a key
// with limiter.Quota.For (an account, a trading pair), several quotas at
// once, all or nothing (limiter.Limiter.Reserve). The Transport books the
// request's turn and sleeps until it with limiter.Reservation.Wait, which
// books again past any hold placed meanwhile, so no request is sent inside a
// hold; Options.WindowGuard becomes each quota's limiter.Quota.Guard, so no
// request charged to one fixed window is granted so close to its end that it
// lands in the next. With Options.FailFast a request that does not fit at
// once fails with a *LimitedError instead.
//
// Each answer reaches the rule's usage parsers (Rule.Usage) before the caller:
// its status, header and, with Rule.PeekBody, the start of its body (Answer).
// A 429, a 418 or a 503 with Retry-After holds the quotas the request was
// charged, in every process; a parser may narrow that to the quota that
// refused (Usage.Refused). Usage counts the server reports (IETFUsage,
// XRateLimit, exchanges.BinanceUsage…) raise ours to the server's, through
// the request's reservation, only while its window is current on Redis's
// clock (limiter.Reservation.Sync). Requests no rule matches go straight
// through, counted in Stats.Unmatched, or fail with ErrInvalid when the
// Transport is Strict.
//
// On the server side, Handler limits incoming requests per key (the quota
// applied to each client's key) and writes the IETF RateLimit and
// RateLimit-Policy fields, with Retry-After on a 429.
//
// Most callers should use a preset of package exchanges (Binance, Coinbase,
// Kraken, Bybit, OKX), which builds the Rules and Options and calls
// NewTransport for them. Those limiting another API use NewTransport with
// their own Rules (a Quota and a Cost, or Charges) and, to learn the
// server's counts, IETFUsage, XRateLimit or a UsageParser of their own:
//
//	tr, err := middleware.NewTransport(nil, lim, middleware.Options{},
//		middleware.Rule{Hosts: []string{"api.example.com"}, Quota: q, Cost: limiter.Cost{"requests": 1},
//			Usage: []middleware.UsageParser{middleware.XRateLimit("requests")}})
//	if err != nil {
//		return err // ErrInvalid: a rule that cannot be used, and which
//	}
//	client := &http.Client{Transport: tr}
//
// A request the quota has no room for in time fails with an error wrapping
// ErrRateLimited (a *LimitedError says which quota and for how long). Servers
// use Handler.
package middleware
