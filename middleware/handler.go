package middleware

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/telemetry"
)

// Handler limits the requests next serves: each takes one unit of every limit
// of quota, counted separately per key, the client keyFunc names for the
// request (an API key, an account, an IP address; an error answers 500 and
// the request is not served). Its spans and metrics go to tel (the zero
// Providers: the global ones). Every answer carries the IETF
// RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers),
// one member per limit, named by the limit:
//
//	RateLimit-Policy: "weight";q=1200;w=60
//	RateLimit: "weight";r=1187;t=42
//
// q and w are the limit's Rate and Period (in whole seconds, rounded up); r is
// the units left (at most q) and t the seconds until the limit is back to
// full, rounded up. A request that does not fit is answered 429 with
// Retry-After, in whole seconds rounded up, at least 1.
//
// Each key's state is quota's for that key (quota.For(key)); a key longer than
// bound.KeyLen is replaced by its SHA-256, an empty one answers 500. The
// key never reaches telemetry. When Redis cannot be reached and the
// limiter fails closed, the answer is 503 with Retry-After: 1. An invalid
// quota, or a nil next, lim or keyFunc, answers every request 500.
func Handler(next http.Handler, lim *limiter.Limiter, keyFunc func(*http.Request) (string, error), quota limiter.Quota, tel telemetry.Providers) http.Handler {
	h := &handler{next: next, lim: lim, key: keyFunc, quota: quota, cost: limiter.Cost{}, tel: newHandlerTel(tel, quota.Name)}
	switch {
	case next == nil:
		h.err = fmt.Errorf("%w: Handler: nil next handler", ErrInvalid)
	case lim == nil:
		h.err = fmt.Errorf("%w: Handler: nil limiter", ErrInvalid)
	case keyFunc == nil:
		h.err = fmt.Errorf("%w: Handler: nil keyFunc", ErrInvalid)
	default:
		h.err = quota.Validate()
	}
	var pol []string
	for _, nl := range quota.Limits {
		h.cost[nl.Name] = 1
		pol = append(pol, sfString(nl.Name)+";q="+sfInt(int64(nl.Limit.Rate))+";w="+sfInt(ceilSeconds(nl.Limit.Period)))
	}
	h.policy = strings.Join(pol, ", ")
	return h
}

type handler struct {
	next   http.Handler
	lim    *limiter.Limiter
	key    func(*http.Request) (string, error)
	quota  limiter.Quota
	cost   limiter.Cost
	policy string
	err    error
	tel    handlerTel
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, span := h.start(r.Context())
	if h.err != nil {
		h.decide(ctx, span, decError, http.StatusInternalServerError, nil, "misconfigured")
		http.Error(w, "rate limiter misconfigured", http.StatusInternalServerError)
		return
	}
	key, err := h.key(r)
	if err != nil {
		h.decide(ctx, span, decError, http.StatusInternalServerError, nil, "key")
		http.Error(w, "rate limit key: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if len(key) > bound.KeyLen {
		sum := sha256.Sum256([]byte(key))
		key = "sha256:" + hex.EncodeToString(sum[:])
	}
	res, err := h.lim.Allow(limiterContext(ctx, span), limiter.Charge{Quota: h.quota.For(key), Cost: h.cost})
	if err != nil {
		if errors.Is(err, limiter.ErrUnavailable) {
			h.decide(ctx, span, decUnavailable, http.StatusServiceUnavailable, nil, "limiter_unavailable")
			w.Header().Set("Retry-After", "1")
			http.Error(w, "rate limiter unavailable", http.StatusServiceUnavailable)
			return
		}
		h.decide(ctx, span, decError, http.StatusInternalServerError, nil, "limiter")
		http.Error(w, "rate limiter error", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("RateLimit-Policy", h.policy)
	if !res.Degraded {
		hd.Set("RateLimit", h.current(res))
	}
	if !res.Allowed {
		h.decide(ctx, span, decDenied, http.StatusTooManyRequests, &res, "")
		hd.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(res.RetryAfter), 1), 10))
		http.Error(w, "rate limit exceeded", http.StatusTooManyRequests)
		return
	}
	d := decAllowed
	if res.Degraded {
		d = decDegraded
	}
	// The decision span ends here: next's work is not the limiter's.
	h.decide(ctx, span, d, 0, &res, "")
	h.next.ServeHTTP(w, r)
}

// current serializes the RateLimit field of res.
func (h *handler) current(res limiter.Result) string {
	var b strings.Builder
	for i, l := range res.Limits {
		if i > 0 {
			b.WriteString(", ")
		}
		r := min(int64(l.Remaining), int64(l.Limit.Rate))
		fmt.Fprintf(&b, "%s;r=%s;t=%s", sfString(l.Name), sfInt(max(r, 0)), sfInt(ceilSeconds(l.ResetAfter)))
	}
	return b.String()
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}
