package middleware

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redquota/redquota/limiter"
)

func TestRuleMatches(t *testing.T) {
	q := limiter.Quota{Name: "q", Limits: []limiter.NamedLimit{{Name: "w", Limit: limiter.PerSecond(10)}}}
	c := limiter.Cost{"w": 1}
	for _, tc := range []struct {
		rule   Rule
		method string
		url    string
		want   bool
	}{
		{Rule{}, "GET", "https://a.com/x", true},
		{Rule{Hosts: []string{"API.binance.com"}}, "GET", "https://api.binance.com/api/v3/ping", true},
		{Rule{Hosts: []string{"api.binance.com"}}, "GET", "https://api.binance.com:8443/x", true},
		{Rule{Hosts: []string{"api.binance.com:443"}}, "GET", "https://api.binance.com/x", true}, // https's default port
		{Rule{Hosts: []string{"api.binance.com:443"}}, "GET", "https://api.binance.com:443/x", true},
		{Rule{Hosts: []string{"api.binance.com:443"}}, "GET", "http://api.binance.com/x", false},
		{Rule{Hosts: []string{"api.binance.com:443"}}, "GET", "https://api.binance.com:8443/x", false},
		{Rule{Hosts: []string{"localhost:80"}}, "GET", "http://LOCALHOST/x", true},
		// IPv6 literals, bracketed or not, with or without a port.
		{Rule{Hosts: []string{"::1"}}, "GET", "http://[::1]:8080/x", true},
		{Rule{Hosts: []string{"[::1]"}}, "GET", "http://[::1]:8080/x", true},
		{Rule{Hosts: []string{"[::1]"}}, "GET", "http://[::1]/x", true},
		{Rule{Hosts: []string{"[::1]:8080"}}, "GET", "http://[::1]:8080/x", true},
		{Rule{Hosts: []string{"[::1]:8080"}}, "GET", "http://[::1]:8081/x", false},
		{Rule{Hosts: []string{"[2001:DB8::1]"}}, "GET", "http://[2001:db8::1]/x", true},
		{Rule{Hosts: []string{"::1"}}, "GET", "http://[::2]/x", false},
		{Rule{Hosts: []string{"api.binance.com"}}, "GET", "https://fapi.binance.com/x", false},
		{Rule{Method: "GET"}, "", "https://a.com/x", true},
		{Rule{Method: "POST"}, "GET", "https://a.com/x", false},
		{Rule{PathPrefix: "/api/v3/order"}, "POST", "https://a.com/api/v3/order/test", true},
		{Rule{PathPrefix: "/api/v3/order"}, "POST", "https://a.com/api/v3/depth", false},
		{Rule{Match: func(r *http.Request) bool { return r.URL.Query().Has("symbol") }}, "GET", "https://a.com/x?symbol=BTC", true},
		{Rule{Method: "GET", Match: func(r *http.Request) bool { return false }}, "GET", "https://a.com/x", false},
	} {
		tc.rule.Quota, tc.rule.Cost = q, c
		req, _ := http.NewRequest(tc.method, tc.url, nil)
		req.Method = tc.method
		if got := compile(tc.rule, "r", 0).matches(req); got != tc.want {
			t.Errorf("%+v on %s %s: %v", tc.rule, tc.method, tc.url, got)
		}
	}
}

// A URL given as a host says so, and what to write instead (it used to be
// reported as "port is not 1-65535").
func TestRuleHostIsURL(t *testing.T) {
	q := limiter.Quota{Name: "q", Limits: []limiter.NamedLimit{{Name: "w", Limit: limiter.PerSecond(10)}}}
	for h, want := range map[string]string{
		"https://api.binance.com":              `host "https://api.binance.com": a URL, not a host or host:port: write "api.binance.com"`,
		"http://127.0.0.1:8080/":               `host "http://127.0.0.1:8080/": a URL, not a host or host:port: write "127.0.0.1:8080"`,
		"wss://stream.binance.com:9443/ws?x=1": `host "wss://stream.binance.com:9443/ws?x=1": a URL, not a host or host:port: write "stream.binance.com:9443"`,
	} {
		r := compile(Rule{Hosts: []string{h}, Quota: q, Cost: limiter.Cost{"w": 1}}, "r", 0)
		if !errors.Is(r.err, ErrInvalid) || !strings.Contains(r.err.Error(), want) {
			t.Errorf("Host %q: err %v, want it to contain %s", h, r.err, want)
		}
	}
}

// A Host that is neither a host nor host:port is an invalid rule, not one
// that never matches.
func TestRuleInvalidHost(t *testing.T) {
	q := limiter.Quota{Name: "q", Limits: []limiter.NamedLimit{{Name: "w", Limit: limiter.PerSecond(10)}}}
	for _, h := range []string{"[::1", "::1]", "[::1]:", "[::1]:http", "a.com:", ":443", "a.com:0", "a.com:65536", "a.com:443:1", "g::1", "a.com/x", "[a.com]"} {
		if r := compile(Rule{Hosts: []string{h}, Quota: q, Cost: limiter.Cost{"w": 1}}, "r", 0); !errors.Is(r.err, ErrInvalid) {
			t.Errorf("Host %q: err %v", h, r.err)
		}
	}
}

func TestSFList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		n    int
		name string
	}{
		{`"default";r=50;t=30`, true, 1, "default"},
		{`burst;q=100;w=60,"daily";q=1000;w=86400`, true, 2, "burst"},
		{`a;x=?1;y=1.5;z=:aGk=:;k="s\"q", (1 2);p`, true, 2, "a"},
		{`"a";r=1;r=2`, true, 1, "a"},
		{``, true, 0, ""},
		{`"a";r=1,`, false, 0, ""},
		{`"a";R=1`, false, 0, ""},
		{`"unterminated`, false, 0, ""},
		{`"a";r=1234567890123456`, false, 0, ""},
		{`"a";r=1.2345`, false, 0, ""},
		{`"a" "b"`, false, 0, ""},
		{"\"a\u00e9\"", false, 0, ""},
	} {
		items, err := parseSFList([]string{tc.in})
		if (err == nil) != tc.ok || len(items) != tc.n {
			t.Errorf("%q: %d items, %v", tc.in, len(items), err)
			continue
		}
		if tc.n > 0 {
			if name, _ := items[0].name(); name != tc.name {
				t.Errorf("%q: name %q", tc.in, name)
			}
		}
	}
	items, _ := parseSFList([]string{`"a";r=1;r=2`})
	if v, _ := items[0].param("r"); v != int64(2) {
		t.Errorf("duplicate parameter: %v, want the last", v)
	}
}

func TestBackoff(t *testing.T) {
	tr := newTransport(nil, nil, Options{RetryBackoff: 100 * time.Millisecond, MaxRetryBackoff: time.Second})
	for attempt, hi := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		hi *= time.Millisecond
		for range 50 {
			if d := tr.backoff(attempt); d < hi/2 || d > hi {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, hi/2, hi)
			}
		}
	}
}

// A usage of 0 is a count to sync only for a limit that Lowers, and only
// when it neither holds nor refuses (a hold-only usage says nothing of the
// count: synced as 0 it would lower the count).
func TestZeroCount(t *testing.T) {
	lowers := limiter.Limit{Rate: 10, Period: time.Second, Algorithm: limiter.FixedWindow, Lowers: true}
	q := limiter.Quota{Name: "q", Limits: []limiter.NamedLimit{{Name: "o", Limit: lowers}, {Name: "w", Limit: limiter.PerSecond(10)}}}
	for _, tc := range []struct {
		u    Usage
		want bool
	}{
		{Usage{Limit: "o"}, true},
		{Usage{Limit: "o", Hold: time.Second}, false},
		{Usage{Limit: "o", Refused: true}, false},
		{Usage{Limit: "w"}, false},
		{Usage{Limit: "x"}, false},
	} {
		if got := zeroCount(q, tc.u); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.u, got, tc.want)
		}
	}
}
