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
	"github.com/redquota/redquota/internal/bestof"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// sapiDocumented are /sapi/ endpoints as Binance documents them: the
// "Weight(IP): n" / "Weight(UID): n" line of each endpoint's page, as the
// doc comments of Binance's connector github.com/binance/binance-connector-js
// at a9de9a9 (2026-07-24) carry it (module in the comment; loan/income also
// read on developers.binance.com/docs/crypto_loan, "Request Weight(UID)
// 6000"). ip and uid are the weights in the IP's and the account's window
// of the endpoint. Written from the documents, not from the preset's table.
var sapiDocumented = []struct {
	method, path, query string
	ip, uid             int
	perSecond           bool
}{
	{"GET", "/sapi/v1/capital/config/getall", "", 10, 0, false},              // wallet: Weight(IP): 10
	{"GET", "/sapi/v1/accountSnapshot", "type=SPOT", 2400, 0, false},         // wallet: Weight(IP): 2400
	{"GET", "/sapi/v1/account/status", "", 1, 0, false},                      // wallet: Weight(IP): 1
	{"POST", "/sapi/v1/capital/withdraw/apply", "coin=BTC", 0, 900, false},   // wallet: Weight(UID): 900 (2024 swagger: IP 1)
	{"POST", "/sapi/v1/asset/transfer", "type=MAIN_UMFUTURE", 0, 900, false}, // wallet: Weight(UID): 900
	// wallet: "Weight(UID): 18000 (10 requests per second)".
	{"GET", "/sapi/v1/capital/withdraw/history", "", 0, 18000, true},
	{"GET", "/sapi/v1/loan/income", "", 0, 6000, false},                          // crypto-loan: Weight(UID): 6000
	{"POST", "/sapi/v2/loan/flexible/borrow", "", 6000, 0, false},                // crypto-loan: Weight(IP): 6000 (2024: UID)
	{"GET", "/sapi/v1/fiat/orders", "transactionType=0", 0, 45000, false},        // fiat: Weight(UID): 45000 (2024: 90000)
	{"GET", "/sapi/v1/rebate/taxQuery", "", 0, 12000, false},                     // rebate: Weight(UID): 12000 (2024: 3000)
	{"DELETE", "/sapi/v1/sub-account/subAccountApi", "", 0, 3000, false},         // sub-account: Weight(UID): 3000
	{"GET", "/sapi/v1/margin/next-hourly-interest-rate", "", 100, 0, false},      // margin-trading: Weight(IP): 100 (2024: UID)
	{"POST", "/sapi/v1/margin/borrow-repay", "type=BORROW", 0, 1500, false},      // margin-trading: Weight(UID): 1500 (2024: 3000)
	{"GET", "/sapi/v1/margin/crossMarginData", "coin=BNB", 1, 0, false},          // margin-trading: 1 when coin is specified (IP)
	{"GET", "/sapi/v1/margin/crossMarginData", "", 5, 0, false},                  // … 5 when the coin parameter is omitted (IP)
	{"GET", "/sapi/v1/margin/isolatedMarginData", "symbol=BTCUSDT", 1, 0, false}, // 1 when a single is specified (IP)
	{"GET", "/sapi/v1/margin/isolatedMarginData", "", 10, 0, false},              // 10 when the symbol parameter is omitted (IP)
	// margin-trading: "6(UID) or 1500(UID) when sideEffectType is MARGIN_BUY
	// or AUTO_BORROW_REPAY".
	{"POST", "/sapi/v1/margin/order", "symbol=BTCUSDT", 0, 6, false},
	{"POST", "/sapi/v1/margin/order", "symbol=BTCUSDT&sideEffectType=NO_SIDE_EFFECT", 0, 6, false},
	{"POST", "/sapi/v1/margin/order", "symbol=BTCUSDT&sideEffectType=MARGIN_BUY", 0, 1500, false},
	{"POST", "/sapi/v1/margin/order/oco", "symbol=BTCUSDT&sideEffectType=AUTO_BORROW_REPAY", 0, 1500, false},
	{"POST", "/sapi/v1/margin/order/otoco", "symbol=BTCUSDT", 0, 6, false},
	// margin-trading: "Weight(UID): 3000, 1 times/min per IP": the IP's
	// whole 12 000 of the endpoint.
	{"POST", "/sapi/v1/margin/max-leverage", "maxLeverage=3", 12_000, 3000, false},
	// sub-account: "Weight(IP): 1" and "Weight(UID): 360".
	{"POST", "/sapi/v1/sub-account/universalTransfer", "", 1, 360, false},
	// derivatives-trading-portfolio-margin-pro: "1 if `asset` is sent, 50 if
	// `asset` is not sent", no IP or UID said: both.
	{"GET", "/sapi/v1/portfolio/asset-index-price", "asset=BTC", 1, 1, false},
	{"GET", "/sapi/v1/portfolio/asset-index-price", "", 50, 50, false},
}

// sapiCharged is what rule (the preset's /sapi/ rule) charges req: the
// weight in the IP's window of the endpoint and in the account's.
func sapiCharged(t *testing.T, rule middleware.Rule, req *http.Request, body []byte) (ip, uid, uid1s int) {
	t.Helper()
	cs, err := rule.Charges(req, body)
	require.NoError(t, err)
	for _, c := range cs {
		switch c.Quota.Name {
		case "binance-sapi":
			ip += c.Cost["sapi-ip-weight"]
		case "binance-sapi-uid":
			uid += c.Cost["sapi-uid-weight"]
		case "binance-sapi-uid-1s":
			uid1s += c.Cost["sapi-uid-weight-1s"]
		default:
			t.Fatalf("charge of quota %q", c.Quota.Name)
		}
	}
	return ip, uid, uid1s
}

// sapiRule is p's /sapi/ rule.
func sapiRule(t *testing.T, p exchanges.Preset) middleware.Rule {
	t.Helper()
	for _, r := range p.Rules {
		if r.PathPrefix == "/sapi/" {
			return r
		}
	}
	t.Fatal("no /sapi/ rule")
	return middleware.Rule{}
}

// Every documented endpoint is charged its documented weight in the limit
// Binance counts it against, and only there. Before 2026-12-07 the preset
// charged every /sapi/ request UnknownWeight (1) to both the IP's and the
// account's window: a UID-limited endpoint then took of the IP's 12 000,
// shared by all accounts behind it, and heavy endpoints were charged 1.
func TestBinanceSAPIDocumentedCosts(t *testing.T) {
	p, err := exchanges.Binance(exchanges.BinanceOptions{})
	require.NoError(t, err)
	rule := sapiRule(t, p)
	for _, d := range sapiDocumented {
		req, _ := http.NewRequest(d.method, "https://api.binance.com"+d.path+"?"+d.query, nil)
		req.Header.Set("X-MBX-APIKEY", "acct")
		ip, uid, uid1s := sapiCharged(t, rule, req, nil)
		want1m, want1s := d.uid, 0
		if d.perSecond {
			want1m, want1s = 0, d.uid
		}
		assert.Equal(t, []int{d.ip, want1m, want1s}, []int{ip, uid, uid1s}, "%s %s?%s: IP, UID minute, UID second", d.method, d.path, d.query)
	}

	// A parameter in a form body counts as in the query string.
	body := "symbol=BTCUSDT&sideEffectType=MARGIN_BUY"
	req, _ := http.NewRequest(http.MethodPost, "https://api.binance.com/sapi/v1/margin/order", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-MBX-APIKEY", "acct")
	_, uid, _ := sapiCharged(t, rule, req, []byte(body))
	assert.Equal(t, 1500, uid, "margin order borrowing, from the form body")

	// An endpoint no table knows: UnknownWeight in both windows.
	req, _ = http.NewRequest(http.MethodGet, "https://api.binance.com/sapi/v9/not/documented", nil)
	req.Header.Set("X-MBX-APIKEY", "acct")
	ip, uid, _ := sapiCharged(t, rule, req, nil)
	assert.Equal(t, []int{1, 1}, []int{ip, uid}, "unknown endpoint")

	// No account (no API key): a UID endpoint charges nothing, an IP one its IP.
	req, _ = http.NewRequest(http.MethodGet, "https://api.binance.com/sapi/v1/loan/income", nil)
	ip, uid, _ = sapiCharged(t, rule, req, nil)
	assert.Equal(t, []int{0, 0}, []int{ip, uid}, "UID endpoint without an account")

	// Weights overrides the weight in the limit the endpoint counts against.
	p, err = exchanges.Binance(exchanges.BinanceOptions{Weights: map[string]int{
		"GET /sapi/v1/loan/income": 7000, "GET /sapi/v1/accountSnapshot": 3000, "GET /sapi/v9/not/documented": 40,
	}})
	require.NoError(t, err)
	rule = sapiRule(t, p)
	for _, c := range []struct {
		path    string
		ip, uid int
	}{{"/sapi/v1/loan/income", 0, 7000}, {"/sapi/v1/accountSnapshot", 3000, 0}, {"/sapi/v9/not/documented", 40, 40}} {
		req, _ = http.NewRequest(http.MethodGet, "https://api.binance.com"+c.path, nil)
		req.Header.Set("X-MBX-APIKEY", "acct")
		ip, uid, _ = sapiCharged(t, rule, req, nil)
		assert.Equal(t, []int{c.ip, c.uid}, []int{ip, uid}, "Weights override of %s", c.path)
	}
}

// Four accounts behind one IP press a UID-limited endpoint (GET
// /sapi/v1/loan/income, Weight(UID) 6000: 30 a window of 180 000) and an
// IP-limited one (GET /sapi/v1/accountSnapshot, Weight(IP) 2400: 5 a window
// of 12 000), 8 processes (2 per account) × 3 senders, windows of a second
// (time scale 1/60), against the simulator counting as Binance documents:
// no 429, each account fills its own UID window (busiest ≥ 90 %: the guard
// keeps a window's last part free and a request is 3.3 % of it) and the IP
// endpoint its IP window (busiest 5 of 5), while the four accounts together
// take 60 times the IP's 12 000 of an endpoint. Charging loan/income to
// the IP's window as well, as the preset did before 2026-12-07, lets 2
// through a window for all accounts together.
func TestBinanceSAPIAccountsBehindOneIP(t *testing.T) {
	const income, snapshot = "GET /sapi/v1/loan/income", "GET /sapi/v1/accountSnapshot"
	accounts := []string{"acct-a", "acct-b", "acct-c", "acct-d"}
	p, err := exchanges.Binance(exchanges.Scaled(exchanges.BinanceOptions{Hosts: []string{"127.0.0.1"}, IP: "ip-1"}, 1.0/60))
	require.NoError(t, err)
	bestof.Run(t, func(t *testing.T, use *bestof.Usage) {
		sim := newSAPISim(t, time.Second, map[string]sapiDoc{income: {"UID", 6000}, snapshot: {"IP", 2400}})
		fleet := newFleet(t, p)
		start := startAfterBoundary(time.Second)
		stop := start.Add(3200 * time.Millisecond)
		drive(t, fleet, 3, stop, func(ctx context.Context, pr *proc, g int) error {
			path := "/sapi/v1/loan/income"
			if g == 0 && pr.id%2 == 0 {
				path = "/sapi/v1/accountSnapshot" // 4 senders of the fleet's 24
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, sim.srv.URL+path, nil)
			if err != nil {
				return err
			}
			req.Header.Set("X-MBX-APIKEY", accounts[pr.id%len(accounts)])
			_, _, err = pr.do(req)
			return err
		})
		sim.mu.Lock()
		defer sim.mu.Unlock()
		require.Zero(t, sim.n429, "429s: %v", sim.refused)
		first, last := start.Unix()+1, stop.Unix()-1
		together := 0
		for _, a := range accounts {
			busiest := 0
			for w := first; w <= last; w++ {
				busiest = max(busiest, sim.used[a+" "+income][w])
			}
			together += busiest
			use.Logf("%s: busiest window %d of 180000", a, busiest)
			if busiest < 162_000 {
				use.Errorf("%s used %d of 180000 in its busiest window", a, busiest)
			}
		}
		busiest := 0
		for w := first; w <= last; w++ {
			busiest = max(busiest, sim.used[snapshot][w])
		}
		use.Logf("IP's accountSnapshot: busiest window %d of 12000", busiest)
		if busiest < 12_000 {
			use.Errorf("accountSnapshot used %d of 12000 in its busiest window", busiest)
		}
		assert.Greater(t, together, 4*162_000-1, "the accounts must not share a window")
	})
}

// Withdraw History counts 18 000 in the account's window of a second
// (180 000: 10 a second), not of a minute: ten go, the eleventh waits for
// the next second, not the next minute. Another account has its own ten. A
// 429 on it holds that account's window of the endpoint only: another
// account and the IP's endpoints go on. miniredis, clock moved by hand.
func TestBinanceSAPIWithdrawHistoryPerSecond(t *testing.T) {
	m, rdb := redistest.NewMini(t)
	m.SetTime(time.Date(2026, 5, 15, 12, 0, 30, 0, time.UTC))
	lim := limiter.New(rdb, limiter.Options{Prefix: redistest.NewPrefix(t), Timeout: testTimeout})
	p, err := exchanges.Binance(exchanges.BinanceOptions{Middleware: middleware.Options{FailFast: true}})
	require.NoError(t, err)
	status := http.StatusOK
	tr, err := p.Transport(lim, rtFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: status, Header: http.Header{"Retry-After": {"30"}}, Request: r, Body: io.NopCloser(strings.NewReader("{}"))}, nil
	}))
	require.NoError(t, err)
	send := func(path, account string) error {
		req, _ := http.NewRequest(http.MethodGet, "https://api.binance.com"+path, nil)
		req.Header.Set("X-MBX-APIKEY", account)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	const history = "/sapi/v1/capital/withdraw/history"
	for i := range 10 {
		require.NoError(t, send(history, "acct-a"), "request %d", i+1)
	}
	require.ErrorIs(t, send(history, "acct-a"), middleware.ErrRateLimited, "the eleventh in a second")
	require.NoError(t, send(history, "acct-b"), "another account's first")
	m.FastForward(time.Second)
	require.NoError(t, send(history, "acct-a"), "the next second")

	// A 429 on a UID endpoint holds that account's window of it only.
	status = http.StatusTooManyRequests
	require.NoError(t, send("/sapi/v1/loan/income", "acct-a"))
	status = http.StatusOK
	require.ErrorIs(t, send("/sapi/v1/loan/income", "acct-a"), middleware.ErrRateLimited, "the refused account during the hold")
	require.NoError(t, send("/sapi/v1/loan/income", "acct-b"), "another account during the hold")
	require.NoError(t, send("/sapi/v1/capital/config/getall", "acct-a"), "an IP endpoint during the hold")
	m.FastForward(31 * time.Second)
	require.NoError(t, send("/sapi/v1/loan/income", "acct-a"), "after the hold")
}
