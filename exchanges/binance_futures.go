package exchanges

import (
	"net/http"
	"strconv"
)

// Binance USD-M futures (fapi) figures, checked 2026-12-06:
//
//   - limits: https://www.binance.com/en/support/faq/rate-limits-on-binance-futures-281596e222414cdd9051664ea621cdc3
//     (last updated 2024-12-27): "The default rate limit per IP is
//     2,400/min, and the default order limit per account/sub-account is
//     1,200/min", with "an additional 10-second limit applicable to USDⓈ-M
//     Futures, default at 300/10s". Higher tiers get more: read yours from
//     GET /fapi/v1/exchangeInfo into BinanceOptions.ExchangeInfo.
//   - weights: the "Request Weight" of each endpoint's page under
//     https://developers.binance.com/docs/derivatives/usds-margined-futures/
//     (dated below).
//   - base endpoint https://fapi.binance.com: .../usds-margined-futures/general-info.
var binanceFuturesRateLimits = []BinanceRateLimit{
	{RateLimitType: binanceTypeWeight, Interval: "MINUTE", IntervalNum: 1, Limit: 2400},
	{RateLimitType: binanceTypeOrders, Interval: "MINUTE", IntervalNum: 1, Limit: 1200},
	{RateLimitType: binanceTypeOrders, Interval: "SECOND", IntervalNum: 10, Limit: 300},
}

// futures is Binance USD-M futures' REST API.
var futures = binanceVenue{prefix: "/fapi/", weights: binanceFuturesWeights, orders: binanceFuturesOrders, ordersSecond: binanceFuturesOrdersSecond}

// binanceFuturesWeights are fapi's weights per endpoint (pages under
// developers.binance.com/docs/derivatives/usds-margined-futures/, checked
// 2026-12-06). Endpoints not listed are charged BinanceOptions.UnknownWeight
// and corrected by the X-MBX-USED-WEIGHT-1M header of their answer.
var binanceFuturesWeights = map[string]func(q queryer) int{
	// market-data/rest-api/Order-Book: limit 5, 10, 20, 50 → 2; 100 → 5;
	// 500 (the default) → 10; 1000 → 20.
	"GET /fapi/v1/depth": func(q queryer) int {
		switch n := limitOf(q, 500); {
		case n <= 50:
			return 2
		case n <= 100:
			return 5
		case n <= 500:
			return 10
		}
		return 20
	},
	// market-data/rest-api/Kline-Candlestick-Data (and the mark and index
	// price klines' pages): limit [1,100) → 1, [100,500) → 2, [500,1000]
	// → 5, above → 10; limit defaults to 500.
	"GET /fapi/v1/klines":           futuresKlinesWeight,
	"GET /fapi/v1/markPriceKlines":  futuresKlinesWeight,
	"GET /fapi/v1/indexPriceKlines": futuresKlinesWeight,
	// Symbol Price Ticker: 1 for a single symbol, 2 without symbol
	// (market-data/websocket-api/Symbol-Price-Ticker, the REST endpoint's
	// figure).
	"GET /fapi/v1/ticker/price": func(q queryer) int { return pick(q.Get("symbol") != "", 1, 2) },
	"GET /fapi/v2/ticker/price": func(q queryer) int { return pick(q.Get("symbol") != "", 1, 2) },
	// trade/rest-api (New Order): "1 on 10s order rate limit
	// (X-MBX-ORDER-COUNT-10S); 1 on 1min order rate limit
	// (X-MBX-ORDER-COUNT-1M); 0 on IP rate limit (x-mbx-used-weight-1m)".
	"POST /fapi/v1/order": fixed(0),
	// trade/rest-api/Cancel-Order: 1.
	"DELETE /fapi/v1/order": fixed(1),
	// Added 2026-12-07 from the "Weight:" of each endpoint's doc comment in
	// Binance's connector github.com/binance/binance-connector-js at
	// a9de9a9 (2026-07-24; file
	// clients/derivatives-trading-usds-futures/src/rest-api/modules/trade-api.ts,
	// last changed 2026-07-22), which carries the endpoint pages' text.
	// Before, they were charged UnknownWeight and no order. Modify Order and
	// New Algo Order: "1 on 10s order rate limit(X-MBX-ORDER-COUNT-10S); 1 on
	// 1min order rate limit(X-MBX-ORDER-COUNT-1M); 0 on IP rate limit".
	"PUT /fapi/v1/order":      fixed(0),
	"POST /fapi/v1/algoOrder": fixed(0),
	// Place and Modify Multiple Orders: "5 on 10s order rate
	// limit(X-MBX-ORDER-COUNT-10S); 1 on 1min order rate
	// limit(X-MBX-ORDER-COUNT-1M); 5 on IP rate limit(x-mbx-used-weight-1m)".
	"POST /fapi/v1/batchOrders": fixed(5),
	"PUT /fapi/v1/batchOrders":  fixed(5),
	// Cancel Multiple Orders, Cancel All Open Orders, Cancel Algo Order:
	// "Weight(IP): 1"; Auto-Cancel All Open Orders (countdownCancelAll): 10.
	"DELETE /fapi/v1/batchOrders":      fixed(1),
	"DELETE /fapi/v1/allOpenOrders":    fixed(1),
	"DELETE /fapi/v1/algoOrder":        fixed(1),
	"POST /fapi/v1/countdownCancelAll": fixed(10),
}

// binanceFuturesOrders are the orders an fapi endpoint counts on each
// ORDERS limit (sources above): New Order, Modify Order, New Algo Order
// and the batch endpoints one; binanceFuturesOrdersSecond the batches' 5 on
// the 10-second limit. Binance documents no decrement of the futures order
// counts when orders fill or are cancelled (unlike spot's unfilled order
// count): they only rise.
var (
	binanceFuturesOrders = map[string]int{
		"POST /fapi/v1/order": 1, "PUT /fapi/v1/order": 1, "POST /fapi/v1/algoOrder": 1,
		"POST /fapi/v1/batchOrders": 1, "PUT /fapi/v1/batchOrders": 1,
	}
	binanceFuturesOrdersSecond = map[string]int{"POST /fapi/v1/batchOrders": 5, "PUT /fapi/v1/batchOrders": 5}
)

// futuresKlinesWeight is a kline request's weight by its limit (default 500).
func futuresKlinesWeight(q queryer) int {
	switch n := limitOf(q, 500); {
	case n < 100:
		return 1
	case n < 500:
		return 2
	case n <= 1000:
		return 5
	}
	return 10
}

// limitOf is the request's limit parameter, def when absent or not a
// positive integer.
func limitOf(q queryer, def int) int {
	if v, err := strconv.Atoi(q.Get("limit")); err == nil && v > 0 {
		return v
	}
	return def
}

// BinanceFutures returns the preset for Binance USD-M futures' REST API
// (/fapi/ on opts.Hosts, default fapi.binance.com), built as Binance's
// spot preset is, from the same options: REQUEST_WEIGHT counts per IP (2400
// per minute; opts.Quota, default "binance-futures", applied to opts.IP),
// ORDERS per account (1200 per minute and 300 per 10 seconds;
// opts.OrderQuota, default "binance-futures-orders", applied to each
// request's API key), each request charged both in one decision; the
// X-MBX-USED-WEIGHT-1M and X-MBX-ORDER-COUNT-1M/-10S headers are synced into
// them and 429/418 hold them, as for spot. Figures and their sources are in
// the comments of binanceFuturesRateLimits and binanceFuturesWeights; an
// order placement weighs 0 on the IP's weight. Futures and spot count
// apart: give each its own preset (and Transport).
func BinanceFutures(opts BinanceOptions) (Preset, error) {
	if err := opts.loadExchangeInfo(); err != nil {
		return Preset{}, err
	}
	if err := checkScale(opts.timeScale); err != nil {
		return Preset{}, err
	}
	if opts.Quota == "" {
		opts.Quota = "binance-futures"
	}
	if opts.OrderQuota == "" {
		opts.OrderQuota = "binance-futures-orders"
	}
	if len(opts.Hosts) == 0 {
		opts.Hosts = []string{"fapi.binance.com"}
	}
	if opts.RateLimits == nil {
		opts.RateLimits = append([]BinanceRateLimit(nil), binanceFuturesRateLimits...)
	}
	if opts.UnknownWeight <= 0 {
		opts.UnknownWeight = 1
	}
	if opts.Account == nil {
		opts.Account = func(r *http.Request) string { return r.Header.Get("X-MBX-APIKEY") }
	}
	return binancePreset("binance-futures", opts, futures, false)
}
