package middleware

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/limiter"
)

// learn updates the limiter from a, the answer to a request charged a.Charges
// by r (nil when it was taken with FailFast): the rule's usage parsers'
// counts raise ours to the server's (r.Sync: only while the window the
// request was charged in is current, on Redis's clock; a limit that Lowers
// may go down), and a 429, 418 or 503
// with Retry-After (or a usage saying nothing is left) holds quotas in every
// process. ctx is the request's context (with the RoundTrip span, if any); tr
// collects what was learnt, for the span.
func (t *Transport) learn(ctx context.Context, rl *rule, a *Answer, r *limiter.Reservation, tr *trip) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	req := a.Request
	holds := make([]time.Duration, len(a.Charges))
	var refused []int
	if r != nil && (a.StatusCode == http.StatusTooManyRequests || a.StatusCode == http.StatusTeapot) {
		// The server did not count the request: before its usage counts
		// are compared with ours (limiter.Quota.Headroom).
		if err := r.Refused(ctx); err != nil {
			t.report(req, fmt.Errorf("middleware: refused: %w", err))
		}
	}
	for _, p := range rl.Usage {
		us, err := p.Parse(a)
		if err != nil {
			t.report(req, err)
		}
		for _, u := range us {
			targets := chargesOf(a.Charges, u)
			if len(targets) == 0 {
				t.report(req, fmt.Errorf("middleware: usage of quota %q limit %q: %w: not charged", u.Quota, u.Limit, limiter.ErrInvalid))
				continue
			}
			if u.Refused {
				refused = append(refused, targets...)
			}
			for _, i := range targets {
				holds[i] = max(holds[i], u.Hold)
			}
			if q := a.Charges[targets[0]].Quota; u.Limit != "" && (u.Used > 0 || zeroCount(q, u)) {
				t.sync(ctx, rl, req, r, q, u, tr)
			}
		}
	}
	switch a.StatusCode {
	case http.StatusTooManyRequests:
		t.stats.tooMany.Add(1)
	case http.StatusTeapot:
		t.stats.banned.Add(1)
	case http.StatusServiceUnavailable:
		t.stats.unavailable.Add(1)
	}
	if limitedIndex(a.StatusCode) >= 0 {
		t.countLimited(ctx, rl, a.StatusCode)
		tr.limited++
		tr.limitedStatus = a.StatusCode
	}
	if h := t.statusHold(req, a); h > 0 {
		if refused == nil {
			for i := range holds {
				holds[i] = max(holds[i], h)
			}
		}
		for _, i := range refused {
			holds[i] = max(holds[i], h)
		}
	}
	reason := holdReason(a)
	for i, hold := range holds {
		if hold <= 0 {
			continue
		}
		hold = min(hold, t.opts.MaxHold)
		q := a.Charges[i].Quota
		if _, err := t.lim.Hold(ctx, q, hold, reason); err != nil {
			t.report(req, fmt.Errorf("middleware: hold quota %q for %s: %w", q.Name, hold, err))
			continue
		}
		t.stats.holds.Add(1)
		tr.hold = max(tr.hold, hold)
	}
}

// holdReason is what a hold a records for operators (Inspect, redquota
// status): the answer's status and host, never its path or headers.
func holdReason(a *Answer) string {
	host := a.Request.URL.Host
	if limitedIndex(a.StatusCode) >= 0 {
		return fmt.Sprintf("%d from %s", a.StatusCode, host)
	}
	return fmt.Sprintf("%d from %s: limit reached", a.StatusCode, host)
}

// sync raises u's limit (of quota q) to u.Used through r, the reservation
// that charged the request: the limiter applies it only while the charge's
// window is current on Redis's clock. Without a reservation (FailFast) it
// applies it to q's current window.
func (t *Transport) sync(ctx context.Context, rl *rule, req *http.Request, r *limiter.Reservation, q limiter.Quota, u Usage, tr *trip) {
	var raised bool
	var err error
	if r != nil {
		raised, err = r.Sync(ctx, q.Name, u.Limit, u.Used)
	} else {
		raised, err = t.lim.Sync(ctx, q, u.Limit, u.Used)
	}
	switch {
	case err != nil:
		t.countSync(ctx, rl, syncError)
		t.report(req, fmt.Errorf("middleware: sync limit %q: %w", u.Limit, err))
	case raised:
		t.stats.syncs.Add(1)
		t.countSync(ctx, rl, syncRaised)
		tr.synced = true
	default:
		t.countSync(ctx, rl, syncUnchanged)
	}
}

// zeroCount reports whether u, with Used 0, is a count of 0 to sync: for a
// limit of q whose count goes down (limiter.Limit.Lowers), when u holds
// nothing and is no refusal. Elsewhere 0 says nothing: a count only raises.
func zeroCount(q limiter.Quota, u Usage) bool {
	l, ok := findLimit(q, u.Limit)
	return ok && l.Lowers && u.Hold == 0 && !u.Refused
}

// chargesOf returns the indexes of the charges u is about: those of the
// quota it names (all of them when it names none), and of those the first
// that has its limit, when it names one.
func chargesOf(cs []limiter.Charge, u Usage) []int {
	var out []int
	for i, c := range cs {
		if u.Quota != "" && c.Quota.Name != u.Quota {
			continue
		}
		if u.Limit != "" {
			if _, ok := findLimit(c.Quota, u.Limit); !ok {
				continue
			}
			return []int{i}
		}
		out = append(out, i)
	}
	return out
}

// statusHold is how long resp's status and Retry-After say to hold, by the
// rule package wsguard follows too (bound.RefusalHold): a 429 or 418 holds
// Retry-After, or FallbackHold when it is 0, and FallbackHold (429) or
// BanHold (418) when it is missing or malformed; a 503 holds Retry-After,
// FallbackHold when it is malformed, nothing when it is missing or 0.
func (t *Transport) statusHold(req *http.Request, resp *Answer) time.Duration {
	d, err := bound.RefusalHold(resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Date"), time.Now(), t.opts.FallbackHold, t.opts.BanHold)
	if err != nil {
		t.report(req, fmt.Errorf("middleware: %d answer: %w: %v", resp.StatusCode, ErrBadHeader, err))
	}
	return d
}
