package middleware

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/limiter"
)

// Rule says which requests are charged to which quotas, at what cost, and
// how to learn from their answers.
//
// A rule matches a request when every condition it sets holds: Hosts, Method,
// PathPrefix and Match. A rule that sets none matches every request. The
// Transport uses the first rule that matches, in order.
type Rule struct {
	// Hosts match the request URL's host when it is one of them,
	// case-insensitively: with its port when the entry has one
	// ("api.binance.com:443", which https://api.binance.com/… matches too: a
	// URL without a port has its scheme's, 80 for http and 443 for https), on
	// any port otherwise. An IPv6 literal may be bracketed or not ("::1",
	// "[::1]", "[::1]:8080"). Empty matches any host. An entry that is neither
	// a host nor host:port makes the rule invalid: it is never ignored.
	Hosts []string
	// Method matches the request method exactly ("GET"); a request with an
	// empty method is a GET. Empty matches any method.
	Method string
	// PathPrefix matches request URL paths that start with it. Empty matches any path.
	PathPrefix string
	// Match, when set, must also report true for the request. It must not
	// modify the request.
	Match func(*http.Request) bool

	// Quota is charged Cost for every request the rule matches, unless
	// Charges is set. Its Name labels the rule's telemetry.
	Quota limiter.Quota
	// Cost is what one request takes from each limit of Quota; limits it does
	// not name (or names with 0) are neither checked nor charged. A rule needs
	// Cost or Charges: unlike a limiter.Charge, a nil Cost does not mean 1 of
	// every limit, and NewTransport refuses the rule ("no Cost and no Charges").
	Cost limiter.Cost
	// Charges, when set, says what a request costs instead of Quota and Cost:
	// one or more quotas (templates applied to a key with Quota.For: an
	// account, a pair) and each one's cost, computed from the request. body
	// is a copy of the request's body, read before it is sent: nil when it has
	// none, at most 64 KiB + 1 bytes (longer bodies are cut there, so
	// len(body) > 64<<10 says it was cut). The charges are taken together,
	// all or nothing (see limiter.Limiter.Reserve). An error it returns
	// fails the request, unsent, wrapped. It must not modify the request.
	Charges func(req *http.Request, body []byte) ([]limiter.Charge, error)

	// Usage learn from each answer to a request the rule matched, before the
	// caller reads it: what the server reports it has counted, and holds it
	// calls for (IETFUsage, XRateLimit, the exchanges' parsers, or your own).
	// Nil reads nothing beyond the status and Retry-After.
	Usage []UsageParser
	// PeekBody is how many bytes of each answer's body the Usage parsers see
	// (Answer.Body), at most 64 KiB. Default 0: none.
	PeekBody int
}

// maxBody bounds the bytes of a body the Transport reads for a rule: of a
// request's for Rule.Charges, of an answer's for Rule.PeekBody (64 KiB, as
// their docs say).
const maxBody = 64 << 10

// rule is a Rule ready to use: copied, normalised, and validated.
type rule struct {
	Rule
	hosts []hostPort // Hosts split and normalised (lower case, no brackets)
	desc  string
	err   error   // non-nil: every request the rule matches fails with it
	tel   ruleTel // metric options, set by the Transport
}

func compile(r Rule, desc string, guard time.Duration) *rule {
	c := &rule{Rule: r, desc: desc}
	c.Quota = guarded(r.Quota, guard)
	c.Cost = maps.Clone(r.Cost)
	c.Usage = append([]UsageParser(nil), r.Usage...)
	c.Hosts = append([]string(nil), r.Hosts...)
	err := c.validate()
	for _, h := range c.Hosts {
		if err != nil {
			break
		}
		var hp hostPort
		hp.name, hp.port, err = splitHost(strings.ToLower(h))
		c.hosts = append(c.hosts, hp)
	}
	if err != nil {
		c.err = fmt.Errorf("%w: %s: %w", ErrInvalid, desc, err)
	}
	return c
}

func (r *Rule) describe() string {
	var parts []string
	if r.Method != "" {
		parts = append(parts, r.Method)
	}
	if len(r.Hosts) > 0 || r.PathPrefix != "" {
		parts = append(parts, strings.Join(r.Hosts, "|")+r.PathPrefix+"*")
	}
	if r.Match != nil {
		parts = append(parts, "func")
	}
	if len(parts) == 0 {
		parts = append(parts, "any")
	}
	if r.Charges != nil {
		return strings.Join(parts, " ") + " → charges func"
	}
	return strings.Join(parts, " ") + " → quota " + fmt.Sprintf("%q", r.Quota.Name)
}

// hostPort is an entry of Rule.Hosts: a host name and a port, "" for any.
type hostPort struct{ name, port string }

// validate reports why r cannot be used.
func (r *rule) validate() error {
	if r.PeekBody < 0 || r.PeekBody > maxBody {
		return fmt.Errorf("PeekBody %d is not 0 to 65536", r.PeekBody)
	}
	for i, p := range r.Usage {
		if p.Parse == nil {
			return fmt.Errorf("usage parser %d has no Parse", i)
		}
	}
	if r.Charges != nil {
		return nil // checked per request
	}
	if err := r.Quota.Validate(); err != nil {
		return err
	}
	if r.Cost == nil {
		return errors.New("no Cost and no Charges")
	}
	if err := checkCost(r.Quota, r.Cost); err != nil {
		return err
	}
	for i, p := range r.Usage {
		if err := knownLimits(r.Quota, p.limits); err != nil {
			return fmt.Errorf("usage parser %d: %w", i, err)
		}
	}
	return nil
}

// checkCost reports why cost cannot be charged to q, as errors wrapping
// limiter.ErrInvalid.
func checkCost(q limiter.Quota, cost limiter.Cost) error {
	charged := false
	for name, c := range cost {
		lim, ok := findLimit(q, name)
		switch {
		case !ok:
			return fmt.Errorf("%w: %q is not a limit of quota %q", limiter.ErrInvalid, name, q.Name)
		case c < 0:
			return fmt.Errorf("%w: %q costs %d", limiter.ErrInvalid, name, c)
		case c > most(lim):
			return fmt.Errorf("%w: %q costs %d, %s allows at most %d", limiter.ErrInvalid, name, c, lim, most(lim))
		}
		charged = charged || c > 0
	}
	if !charged {
		return fmt.Errorf("%w: cost charges no limit of quota %q", limiter.ErrInvalid, q.Name)
	}
	return nil
}

// matches reports whether the rule applies to req.
func (r *rule) matches(req *http.Request) bool {
	if r.Method != "" {
		m := req.Method
		if m == "" {
			m = http.MethodGet
		}
		if m != r.Method {
			return false
		}
	}
	if len(r.hosts) > 0 && !r.matchesHost(req.URL) {
		return false
	}
	if r.PathPrefix != "" && !strings.HasPrefix(req.URL.Path, r.PathPrefix) {
		return false
	}
	return r.Match == nil || r.Match(req)
}

// matchesHost reports whether u's host is one of the rule's hosts.
func (r *rule) matchesHost(u *url.URL) bool {
	name := u.Hostname()
	for _, h := range r.hosts {
		if strings.EqualFold(name, h.name) && (h.port == "" || urlPort(u) == h.port) {
			return true
		}
	}
	return false
}

// splitHost splits an entry of Rule.Hosts into its host name (an IPv6 literal without
// brackets) and port, "" when it has none.
func splitHost(h string) (name, port string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("host %q: %s", h, why)
	}
	if i := strings.Index(h, "://"); i >= 0 {
		// The likeliest mistake, which the checks below would report as a
		// bad port or host name.
		host := h[i+3:]
		if j := strings.IndexAny(host, "/?#"); j >= 0 {
			host = host[:j]
		}
		return bad("a URL, not a host or host:port: write " + strconv.Quote(host))
	}
	switch {
	case strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]"):
		name = h[1 : len(h)-1]
	case strings.HasPrefix(h, "["):
		if name, port, err = net.SplitHostPort(h); err != nil {
			return bad("not a host or host:port")
		}
	case strings.Count(h, ":") > 1:
		name = h // an IPv6 literal without brackets
	case strings.Contains(h, ":"):
		if name, port, err = net.SplitHostPort(h); err != nil {
			return bad("not a host or host:port")
		}
	default:
		name = h
	}
	if (strings.HasPrefix(h, "[") || strings.Contains(name, ":")) && (net.ParseIP(name) == nil || !strings.Contains(name, ":")) {
		return bad("not an IPv6 address")
	}
	if strings.HasSuffix(h, ":") {
		return bad("empty port")
	}
	if name == "" || strings.ContainsAny(name, "/?#@[] ") {
		return bad("not a host name")
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return bad("port is not 1-65535")
		}
	}
	return name, port, nil
}

// urlPort is u's port, or its scheme's default (80 for http and ws, 443 for
// https and wss) when it has none.
func urlPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "ws":
		return "80"
	case "https", "wss":
		return "443"
	}
	return ""
}

// guarded is q with guard as its Guard when it has a fixed-window limit and
// no Guard of its own (see Options.WindowGuard).
func guarded(q limiter.Quota, guard time.Duration) limiter.Quota {
	if q.Guard != 0 || guard <= 0 {
		return q
	}
	for _, nl := range q.Limits {
		if nl.Limit.Algorithm == limiter.FixedWindow {
			q.Guard = guard
			return q
		}
	}
	return q
}

// charges are what req takes: the rule's Quota and Cost, or what Charges
// computes from req and body, checked, each quota guarded by guard.
func (r *rule) charges(req *http.Request, body []byte, guard time.Duration) ([]limiter.Charge, error) {
	if r.Charges == nil {
		return []limiter.Charge{{Quota: r.Quota, Cost: r.Cost}}, nil
	}
	cs, err := r.Charges(req, body)
	if err != nil {
		return nil, fmt.Errorf("middleware: charges of %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	if len(cs) == 0 {
		return nil, fmt.Errorf("middleware: charges of %s %s (%s): %w: none", req.Method, req.URL.Redacted(), r.desc, limiter.ErrInvalid)
	}
	for i := range cs {
		cs[i].Quota = guarded(cs[i].Quota, guard)
		c := cs[i]
		if len(c.Quota.Limits) == 0 && len(c.Cost) == 0 {
			continue // a hold-only charge: the quota's hold is waited out, nothing is charged
		}
		if err := c.Quota.Validate(); err != nil {
			return nil, fmt.Errorf("middleware: charges of %s %s (%s): %w", req.Method, req.URL.Redacted(), r.desc, err)
		}
		if err := checkCost(c.Quota, c.Cost); err != nil {
			return nil, fmt.Errorf("middleware: charges of %s %s (%s): %w", req.Method, req.URL.Redacted(), r.desc, err)
		}
	}
	return cs, nil
}

// findLimit returns the limit of q named name.
func findLimit(q limiter.Quota, name string) (limiter.Limit, bool) {
	for _, nl := range q.Limits {
		if nl.Name == name {
			return nl.Limit, true
		}
	}
	return limiter.Limit{}, false
}

// most is the most units one call can take from l.
func most(l limiter.Limit) int { return bound.Most(l.Rate, l.Burst, l.Algorithm == limiter.GCRA) }
