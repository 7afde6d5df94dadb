package exchanges_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
)

// Binance answers HTTP 403 when its Web Application Firewall bans the IP:
// "HTTP 403 return code is used when a WAF (Web Application Firewall) rule
// has been violated. This can indicate a rate limit violation or a security
// block" (rest-api.md, "HTTP Return Codes", since binance-spot-api-docs
// 63ee25b of 2025-12-09), and Binance's FAQ 360004492232 (updated
// 2024-11-15): "Web Application Firewall limitations will only be applied
// by IP. Usually, a WAF ban will have a duration of 5 minutes", "You must
// wait until the ban is over". The preset holds the IP's quota 5 minutes
// (or the answer's Retry-After), not the accounts'; before 2026-12-07 it
// ignored the 403 and let the fleet go on sending into the ban.
func TestBinanceWAF403(t *testing.T) {
	for _, c := range []struct {
		name       string
		retryAfter string
		hold       time.Duration
	}{
		{"no Retry-After", "", 5 * time.Minute},
		{"Retry-After", "60", time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, rdb := redistest.NewMini(t)
			m.SetTime(time.Date(2026, 5, 15, 12, 0, 30, 0, time.UTC))
			lim := limiter.New(rdb, limiter.Options{Prefix: redistest.NewPrefix(t), Timeout: testTimeout})
			p, err := exchanges.Binance(exchanges.BinanceOptions{})
			require.NoError(t, err)
			tr, err := p.Transport(lim, rtFunc(func(r *http.Request) (*http.Response, error) {
				h := http.Header{"Content-Type": {"text/html"}}
				if c.retryAfter != "" {
					h.Set("Retry-After", c.retryAfter)
				}
				return &http.Response{StatusCode: http.StatusForbidden, Header: h, Request: r,
					Body: io.NopCloser(strings.NewReader("<html><body>403 Forbidden</body></html>"))}, nil
			}))
			require.NoError(t, err)
			for _, u := range []string{
				"https://api.binance.com/api/v3/depth?symbol=BTCUSDT",
				"https://api.binance.com/sapi/v1/capital/config/getall",
			} {
				req, _ := http.NewRequest(http.MethodGet, u, nil)
				req.Header.Set("X-MBX-APIKEY", "acct-a")
				resp, err := tr.RoundTrip(req)
				require.NoError(t, err)
				resp.Body.Close()
			}
			allowed := func(q limiter.Quota, l string) bool {
				t.Helper()
				res, err := lim.Allow(context.Background(), limiter.Charge{Quota: q, Cost: limiter.Cost{l: 1}})
				require.NoError(t, err)
				return res.Allowed
			}
			sapi := func() limiter.Quota {
				for _, q := range p.Quotas {
					if q.Name == "binance-sapi" {
						return q.For(" GET /sapi/v1/capital/config/getall") // IP "" and the endpoint, as the preset applies it
					}
				}
				t.Fatal("no binance-sapi quota")
				return limiter.Quota{}
			}()
			m.FastForward(c.hold - 5*time.Second)
			assert.False(t, allowed(p.Quotas[0], "weight-1m"), "the IP's weight is free before the ban's end")
			assert.False(t, allowed(sapi, "sapi-ip-weight"), "the /sapi/ endpoint's IP weight is free before the ban's end")
			assert.True(t, allowed(accountQuota(p, "acct-a"), "orders-1d"), "a WAF ban (by IP) held the account")
			m.FastForward(6 * time.Second)
			assert.True(t, allowed(p.Quotas[0], "weight-1m"), "the IP is still held after the ban")
			assert.True(t, allowed(sapi, "sapi-ip-weight"), "the /sapi/ endpoint is still held after the ban")
		})
	}
}

// The WebSocket API answers status 403 when the firewall blocks the IP
// (web-socket-api.md, "Status codes": "403 – you have been blocked by the
// Web Application Firewall"): the IP's quota is held 5 minutes, or until
// retryAfter when the answer has one.
func TestBinanceWebSocketWAF403(t *testing.T) {
	api, _, err := exchanges.BinanceWebSocket(exchanges.BinanceOptions{})
	require.NoError(t, err)
	rf := api.Refusals(wsguard.Signal{Message: []byte(`{"id":"w1","status":403,"error":{"code":-1,"msg":"blocked"}}`)})
	require.Len(t, rf, 1)
	assert.Equal(t, wsguard.Refusal{Quota: "binance", ID: "w1", Hold: 5 * time.Minute}, rf[0])
	rf = api.Refusals(wsguard.Signal{Message: []byte(`{"id":"w2","status":403,"error":{"code":-1,"msg":"blocked","data":{"serverTime":1000,"retryAfter":61000}}}`)})
	require.Len(t, rf, 1)
	assert.Equal(t, wsguard.Refusal{Quota: "binance", ID: "w2", Hold: time.Minute}, rf[0])
}

// A handshake answered 403 (the firewall's ban of the IP) holds what the next
// attempt would charge: the IP's quota for the WebSocket API, the stream
// connection quota for streams, for Retry-After or 5 minutes.
func TestBinanceWebSocketHandshake403(t *testing.T) {
	api, streams, err := exchanges.BinanceWebSocket(exchanges.BinanceOptions{})
	require.NoError(t, err)
	ban := &wsguard.HandshakeError{StatusCode: http.StatusForbidden, Header: http.Header{}}
	assert.Equal(t, []wsguard.Refusal{{Quota: "binance", Hold: 5 * time.Minute}}, api.Refusals(wsguard.Signal{Handshake: ban}))
	assert.Equal(t, []wsguard.Refusal{{Quota: "binance-stream-connections", Hold: 5 * time.Minute}}, streams.Refusals(wsguard.Signal{Handshake: ban}))
	ban.Header.Set("Retry-After", "30")
	assert.Equal(t, []wsguard.Refusal{{Quota: "binance", Hold: 30 * time.Second}}, api.Refusals(wsguard.Signal{Handshake: ban}))
	// 429 and 418 are the guard's own handling; other statuses hold nothing.
	for _, code := range []int{http.StatusTooManyRequests, http.StatusTeapot, http.StatusBadGateway} {
		assert.Empty(t, api.Refusals(wsguard.Signal{Handshake: &wsguard.HandshakeError{StatusCode: code}}), "status %d", code)
		assert.Empty(t, streams.Refusals(wsguard.Signal{Handshake: &wsguard.HandshakeError{StatusCode: code}}), "status %d", code)
	}
}
