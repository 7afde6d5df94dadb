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

	"github.com/redquota/redquota/limiter"
)

// Rule says which requests are charged to which quota, at what cost, and which
// usage headers of their responses to learn from.
//
// A rule matches a request when every condition it sets holds: Host, Method,
// PathPrefix and Match. A rule that sets none matches every request. The
// Transport uses the first rule that matches, in order.
type Rule struct {
	// Host matches the request URL's host, case-insensitively: with its port
	// when Host has one ("api.binance.com:443", which https://api.binance.com/…
	// matches too: a URL without a port has its scheme's, 80 for http and 443
	// for https), on any port otherwise. An IPv6 literal may be bracketed or
	// not ("::1", "[::1]", "[::1]:8080"). Empty matches any host. A Host that
	// is neither a host nor host:port makes the rule invalid.
	Host string
	// Method matches the request method exactly ("GET"); a request with an
	// empty method is a GET. Empty matches any method.
	Method string
	// PathPrefix matches request URL paths that start with it. Empty matches any path.
	PathPrefix string
	// Match, when set, must also report true for the request. It must not
	// modify the request.
	Match func(*http.Request) bool

	// Quota is charged for every request the rule matches.
	Quota limiter.Quota
	// Cost is what one request takes from each limit of Quota; limits it does
	// not name (or names with 0) are neither checked nor charged. Used when
	// CostFunc is nil.
	Cost limiter.Cost
	// CostFunc computes a request's cost, for endpoints whose cost depends on
	// the request (Binance's order book weight depends on its limit parameter).
	// An error it returns fails the request, unsent, wrapped. It must not modify
	// the request.
	CostFunc func(*http.Request) (limiter.Cost, error)

	// Usage read what the server reports it has counted, from each response
	// to a request the rule matched: BinanceUsage, IETFUsage, XRateLimit, or
	// your own. Nil reads nothing.
	Usage []UsageParser
}

// rule is a Rule ready to use: copied, normalised, and validated.
type rule struct {
	Rule
	hostName, hostPort string // Host split and normalised (lower case, no brackets)
	desc               string
	err                error   // non-nil: every request the rule matches fails with it
	tel                ruleTel // metric options, set by the Transport
}

func compile(r Rule, desc string) *rule {
	c := &rule{Rule: r, desc: desc}
	c.Cost = maps.Clone(r.Cost)
	c.Usage = append([]UsageParser(nil), r.Usage...)
	c.Host = strings.ToLower(r.Host)
	err := c.validate()
	if err == nil && c.Host != "" {
		c.hostName, c.hostPort, err = splitHost(c.Host)
	}
	if err != nil {
		c.err = fmt.Errorf("%w: %s: %w", ErrInvalidRule, desc, err)
	}
	return c
}

func (r *Rule) describe() string {
	var parts []string
	if r.Method != "" {
		parts = append(parts, r.Method)
	}
	if r.Host != "" || r.PathPrefix != "" {
		parts = append(parts, r.Host+r.PathPrefix+"*")
	}
	if r.Match != nil {
		parts = append(parts, "func")
	}
	if len(parts) == 0 {
		parts = append(parts, "any")
	}
	return strings.Join(parts, " ") + " → quota " + fmt.Sprintf("%q", r.Quota.Name)
}

// validate reports why r cannot be used.
func (r *rule) validate() error {
	if err := r.Quota.Validate(); err != nil {
		return err
	}
	switch {
	case r.CostFunc == nil && r.Cost == nil:
		return errors.New("no Cost and no CostFunc")
	case r.CostFunc == nil:
		if err := checkCost(r.Quota, r.Cost); err != nil {
			return err
		}
	}
	for i, p := range r.Usage {
		if p == nil {
			return fmt.Errorf("usage parser %d is nil", i)
		}
		if v, ok := p.(interface{ validate(limiter.Quota) error }); ok {
			if err := v.validate(r.Quota); err != nil {
				return fmt.Errorf("usage parser %d: %w", i, err)
			}
		}
	}
	return nil
}

// checkCost reports why cost cannot be charged to q, with the limiter's errors:
// limiter.ErrUnknownLimit, limiter.ErrInvalidCost, limiter.ErrExceedsLimit.
func checkCost(q limiter.Quota, cost limiter.Cost) error {
	charged := false
	for name, c := range cost {
		lim, ok := q.Find(name)
		switch {
		case !ok:
			return fmt.Errorf("%w: %q is not a limit of quota %q", limiter.ErrUnknownLimit, name, q.Name)
		case c < 0:
			return fmt.Errorf("%w: %q costs %d", limiter.ErrInvalidCost, name, c)
		case c > lim.Max():
			return fmt.Errorf("%w: %q costs %d, %s allows at most %d", limiter.ErrExceedsLimit, name, c, lim, lim.Max())
		}
		charged = charged || c > 0
	}
	if !charged {
		return fmt.Errorf("%w: cost charges no limit of quota %q", limiter.ErrInvalidCost, q.Name)
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
	if r.Host != "" {
		if !strings.EqualFold(req.URL.Hostname(), r.hostName) {
			return false
		}
		if r.hostPort != "" && urlPort(req.URL) != r.hostPort {
			return false
		}
	}
	if r.PathPrefix != "" && !strings.HasPrefix(req.URL.Path, r.PathPrefix) {
		return false
	}
	return r.Match == nil || r.Match(req)
}

// splitHost splits a Rule.Host into its host name (an IPv6 literal without
// brackets) and port, "" when it has none.
func splitHost(h string) (name, port string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("host %q: %s", h, why)
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

// cost is what req takes from the rule's quota.
func (r *rule) cost(req *http.Request) (limiter.Cost, error) {
	if r.CostFunc == nil {
		return r.Cost, nil
	}
	c, err := r.CostFunc(req)
	if err != nil {
		return nil, fmt.Errorf("middleware: cost of %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	if err := checkCost(r.Quota, c); err != nil {
		return nil, fmt.Errorf("middleware: cost of %s %s (%s): %w", req.Method, req.URL.Redacted(), r.desc, err)
	}
	return c, nil
}
