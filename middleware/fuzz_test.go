package middleware

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/redquota/redquota/limiter"
)

// Usage headers: garbage is reported as ErrBadHeader, never a panic, and no
// parsed count is negative or names a limit the quota does not have.
func FuzzUsageHeaders(f *testing.F) {
	f.Add("X-Mbx-Used-Weight-1m", "1200", "RateLimit", `"default";r=50;t=30`, "X-RateLimit-Remaining", "7")
	f.Add("X-Mbx-Order-Count-10s", "-3", "RateLimit-Policy", `"default";q=100;w=60`, "X-RateLimit-Reset", "abc")
	f.Add("X-Mbx-Used-Weight-1M", "999999999999999999999999", "RateLimit", `;;;"`, "X-RateLimit-Limit", "0")
	q := limiter.Quota{Name: "ex", Limits: []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: 1200, Period: time.Minute, Burst: 1200, Algorithm: limiter.FixedWindow}},
		{Name: "orders", Limit: limiter.Every(10, 10*time.Second)},
	}}
	parsers := []UsageParser{
		IETFUsage(map[string]string{"default": "weight"}),
		XRateLimit("weight"),
	}
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		h := http.Header{}
		h.Add(k1, v1)
		h.Add(k2, v2)
		h.Add(k3, v3)
		for _, p := range parsers {
			us, err := p.Parse(&Answer{Header: h, Charges: []limiter.Charge{{Quota: q}}})
			if err != nil && !errors.Is(err, ErrBadHeader) {
				t.Fatalf("%T: %v is not ErrBadHeader", p, err)
			}
			for _, u := range us {
				if _, ok := findLimit(q, u.Limit); !ok || u.Used < 0 {
					t.Fatalf("%T parsed %+v from %v", p, u, h)
				}
			}
		}
	})
}
