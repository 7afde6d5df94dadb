package middleware

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/redquota/redquota/limiter"
)

// learn updates the limiter from a, the answer to a request charged cs
// (booked as c) and sent at sent: the rule's usage parsers' counts raise
// ours to the server's, and a 429, 418 or 503 with Retry-After (or a usage
// saying nothing is left) holds quotas in every process. ctx is the request's
// context (with the RoundTrip span, if any); tr collects what was learnt, for
// the span.
func (t *Transport) learn(ctx context.Context, r *rule, a *Answer, c []charge, sent time.Time, tr *trip) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	req := a.Request
	holds := make([]time.Duration, len(a.Charges))
	var refused []int
	for _, p := range r.Usage {
		us, err := p.ParseUsage(a)
		if err != nil {
			t.report(req, err)
		}
		for _, u := range us {
			targets := chargesOf(a.Charges, u)
			if len(targets) == 0 {
				t.report(req, fmt.Errorf("middleware: usage of quota %q limit %q: %w: not charged", u.Quota, u.Limit, limiter.ErrUnknownLimit))
				continue
			}
			if u.Refused {
				refused = append(refused, targets...)
			}
			for _, i := range targets {
				holds[i] = max(holds[i], u.Hold)
			}
			if u.Used <= 0 || u.Limit == "" {
				continue
			}
			i := targets[0]
			q := a.Charges[i].Quota
			if !current(q, u.Limit, c[i], sent, time.Now(), a.Header.Get("Date")) {
				t.stats.syncsSkipped.Add(1)
				t.countSync(ctx, r, syncSkipped)
				continue
			}
			raised, err := t.lim.Sync(ctx, q, u.Limit, u.Used)
			switch {
			case err != nil:
				t.countSync(ctx, r, syncError)
				t.report(req, fmt.Errorf("middleware: sync limit %q of quota %q: %w", u.Limit, q.Name, err))
			case raised:
				t.stats.syncs.Add(1)
				t.countSync(ctx, r, syncRaised)
				tr.synced = true
			default:
				t.countSync(ctx, r, syncUnchanged)
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
		t.countLimited(ctx, r, a.StatusCode)
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
	for i, hold := range holds {
		if hold <= 0 {
			continue
		}
		hold = min(hold, t.opts.MaxHold)
		q := a.Charges[i].Quota
		if _, err := t.lim.Hold(ctx, q.Name, hold); err != nil {
			t.report(req, fmt.Errorf("middleware: hold quota %q for %s: %w", q.Name, hold, err))
			continue
		}
		t.stats.holds.Add(1)
		tr.hold = max(tr.hold, hold)
	}
}

// chargesOf returns the indexes of the charges u is about: those of the
// quota it names (all of them when it names none), and of those the first
// that has its limit, when it names one.
func chargesOf(cs []Charge, u Usage) []int {
	var out []int
	for i, c := range cs {
		if u.Quota != "" && c.Quota.Name != u.Quota {
			continue
		}
		if u.Limit != "" {
			if _, ok := c.Quota.Find(u.Limit); !ok {
				continue
			}
			return []int{i}
		}
		out = append(out, i)
	}
	return out
}

// current reports whether a usage count of limit, read from an answer to a
// request charged c, sent at sent and received now, may be applied to limit's
// current window. Only fixed windows are in question. The server counted the
// request in the window it arrived in, which the window guard made the window
// it was charged in: when the Sync reaches Redis still in that window, yes.
// Past its end, the count may be the charged window's, and raising the new
// window's count to it wastes up to a whole window (a minute, on Binance); or
// the request landed late and the count is the new window's, which we must
// learn. The answer's Date (whole seconds) tells which, for windows of whole
// seconds: apply the count only if it says the request arrived in the window
// the Sync lands in. Without a usable Date, apply it: a wasted window costs
// less than a ban.
//
// The windows are Redis's (see windowEnd); for a fixed-window limit the
// request did not charge, only the local clock is at hand.
func current(q limiter.Quota, limit string, c charge, sent, now time.Time, date string) bool {
	l, ok := q.Find(limit)
	if !ok || l.Algorithm != limiter.FixedWindow {
		return true
	}
	margin := min(syncMargin, l.Period/10) // the Sync runs in Redis a moment after now
	p := l.Period.Microseconds()
	var cur int64 // the window the Sync lands in
	if e, ok := c.ends[limit]; ok {
		over := now.Add(margin).Sub(e.first)
		if over < 0 {
			return true
		}
		cur = e.next.UnixMicro()/p + int64(over/l.Period)
	} else {
		cur = now.Add(margin).UnixMicro() / p
		if sent.UnixMicro()/p == cur {
			return true
		}
	}
	d, err := http.ParseTime(date)
	if err != nil || l.Period%time.Second != 0 {
		return true
	}
	return d.UnixMicro()/p == cur
}

// syncMargin is how close to its window's end a fixed-window count is no
// longer synced, since the Sync call reaches Redis a little later.
const syncMargin = 10 * time.Millisecond

// statusHold is how long resp's status and Retry-After say to hold:
//
//	429: Retry-After, or FallbackHold when it is missing or malformed
//	418: Retry-After, or BanHold when it is missing or malformed
//	503: Retry-After, FallbackHold when malformed, nothing when missing
//
// Retry-After: 0 (or a date already past) holds nothing.
func (t *Transport) statusHold(req *http.Request, resp *Answer) time.Duration {
	var fallback time.Duration
	switch resp.StatusCode {
	case http.StatusTooManyRequests:
		fallback = t.opts.FallbackHold
	case http.StatusTeapot:
		fallback = t.opts.BanHold
	case http.StatusServiceUnavailable:
	default:
		return 0
	}
	v := resp.Header.Get("Retry-After")
	if strings.TrimSpace(v) == "" {
		return fallback
	}
	d, err := ParseRetryAfter(v, resp.Header.Get("Date"), time.Now())
	if err != nil {
		t.report(req, fmt.Errorf("middleware: %d answer: %w", resp.StatusCode, err))
		if resp.StatusCode == http.StatusServiceUnavailable {
			return t.opts.FallbackHold
		}
		return fallback
	}
	return d
}
