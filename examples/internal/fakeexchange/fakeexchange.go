// Package fakeexchange is a simulated exchange for redquota's examples: a local
// HTTP server that answers a few Binance spot market-data endpoints with
// Binance's request weights, counts weight in clock-aligned fixed windows as
// Binance does, and punishes abuse the same way: a request over the limit is
// answered 429 with Retry-After, and a client that keeps sending during a
// Retry-After is banned with 418.
//
// Windows and bans are scaled down (a 1 s window instead of Binance's minute)
// so that an example shows limiting within seconds. It never touches the
// internet.
package fakeexchange

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redquota/redquota/market"
)

// Options configure an Exchange. The zero value works; each field documents its
// default.
type Options struct {
	// Limit is the request weight allowed per Window. Default 1200 (Binance's
	// historical REQUEST_WEIGHT per minute).
	Limit int
	// Window is the length of the clock-aligned window weight is counted in;
	// a whole number of seconds. Default 1 s.
	Window time.Duration
	// MinLatency and MaxLatency bound the time the exchange takes to answer,
	// drawn uniformly. Defaults 30 ms and 80 ms.
	MinLatency, MaxLatency time.Duration
	// BanAfter is how many requests sent during a Retry-After earn a ban (418).
	// Default 3.
	BanAfter int
	// BanFor is how long a ban lasts. Default 3 s (Binance's shortest is 2 min).
	BanFor time.Duration
}

// Stats count what the exchange answered.
type Stats struct {
	// Calls counts every request to a known endpoint.
	Calls int64
	// OK, TooManyRequests and Banned count 200, 429 and 418 answers.
	OK, TooManyRequests, Banned int64
	// Weight is the weight of requests answered 200 (not what Spend added).
	Weight int64
	// Windows holds the weight counted in each window, keyed by its start.
	Windows map[time.Time]int
}

// Peak is the most weight counted in any one window.
func (s Stats) Peak() int {
	p := 0
	for _, w := range s.Windows {
		p = max(p, w)
	}
	return p
}

// Exchange is a running simulated exchange. It is safe for concurrent use.
type Exchange struct {
	srv  *httptest.Server
	opts Options

	mu         sync.Mutex
	window     int64     // index of the current window
	used       int       // weight counted in it, ours and outside spenders'
	retryUntil time.Time // the latest Retry-After given
	violations int       // requests sent before retryUntil
	banUntil   time.Time
	stats      Stats
}

// New starts an exchange on a free loopback port. Close it when done.
func New(o Options) *Exchange {
	if o.Limit <= 0 {
		o.Limit = 1200
	}
	if o.Window < time.Second {
		o.Window = time.Second
	}
	o.Window = o.Window.Truncate(time.Second)
	if o.MinLatency <= 0 && o.MaxLatency <= 0 {
		o.MinLatency, o.MaxLatency = 30*time.Millisecond, 80*time.Millisecond
	}
	o.MaxLatency = max(o.MaxLatency, o.MinLatency)
	if o.BanAfter <= 0 {
		o.BanAfter = 3
	}
	if o.BanFor <= 0 {
		o.BanFor = 3 * time.Second
	}
	e := &Exchange{opts: o, stats: Stats{Windows: map[time.Time]int{}}}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	return e
}

// URL is the exchange's base URL, e.g. http://127.0.0.1:40123.
func (e *Exchange) URL() string { return e.srv.URL }

// Limit is the weight allowed per window.
func (e *Exchange) Limit() int { return e.opts.Limit }

// Window is the length of a window.
func (e *Exchange) Window() time.Duration { return e.opts.Window }

// UsageHeader is the header that reports the weight counted in the current
// window, e.g. X-MBX-USED-WEIGHT-1S for a 1 s window.
func (e *Exchange) UsageHeader() string { return "X-MBX-USED-WEIGHT-" + e.Interval() }

// Interval names the window as Binance names intervals: "1s", "1m".
func (e *Exchange) Interval() string {
	s := int(e.opts.Window / time.Second)
	if s%60 != 0 {
		return strconv.Itoa(s) + "s"
	}
	return strconv.Itoa(s/60) + "m"
}

// Close stops the exchange, waiting for requests in flight.
func (e *Exchange) Close() { e.srv.Close() }

// Stats returns what the exchange has counted since it started or since the
// last TakeStats.
func (e *Exchange) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Windows = make(map[time.Time]int, len(e.stats.Windows))
	for k, v := range e.stats.Windows {
		s.Windows[k] = v
	}
	return s
}

// TakeStats returns Stats and starts counting afresh. The limits it enforces
// (the current window's weight, a Retry-After, a ban) are not reset.
func (e *Exchange) TakeStats() Stats {
	s := e.Stats()
	e.mu.Lock()
	e.stats = Stats{Windows: map[time.Time]int{}}
	e.mu.Unlock()
	return s
}

// Spend counts weight in the current window as spent by another client of the
// same account or IP that does not share our Redis: a script someone runs by
// hand, a process of another team. It is what usage headers and 429s exist for.
func (e *Exchange) Spend(weight int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.roll(time.Now())
	e.used += weight
}

// Used is the weight counted in the current window.
func (e *Exchange) Used() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.roll(time.Now())
	return e.used
}

// roll starts a new window when now is past the current one. Called with mu held.
func (e *Exchange) roll(now time.Time) int64 {
	w := now.UnixMicro() / e.opts.Window.Microseconds()
	if w != e.window {
		e.window, e.used = w, 0
	}
	return w
}

// DepthWeight is Binance's weight of GET /api/v3/depth by its limit parameter
// (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints#order-book).
func DepthWeight(limit int) int {
	switch {
	case limit <= 100:
		return 5
	case limit <= 500:
		return 25
	case limit <= 1000:
		return 50
	}
	return 250
}

// TickerWeight is Binance's weight of GET /api/v3/ticker/24hr: 2 for one symbol.
const TickerWeight = 2

// endpoint returns the weight of a request and the body that answers it.
func (e *Exchange) endpoint(r *http.Request) (int, func(time.Time) any, error) {
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v3/ping":
		return 1, func(time.Time) any { return struct{}{} }, nil
	case r.Method == http.MethodGet && r.URL.Path == "/api/v3/ticker/24hr":
		sym := q.Get("symbol")
		if sym == "" {
			return 0, nil, fmt.Errorf("this simulation needs a symbol")
		}
		return TickerWeight, func(now time.Time) any { return ticker(sym, now) }, nil
	case r.Method == http.MethodGet && r.URL.Path == "/api/v3/depth":
		sym := q.Get("symbol")
		if sym == "" {
			return 0, nil, fmt.Errorf("mandatory parameter 'symbol' was not sent")
		}
		limit := 100
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 5000 {
				return 0, nil, fmt.Errorf("illegal limit %q", v)
			}
			limit = n
		}
		return DepthWeight(limit), func(now time.Time) any { return depth(sym, min(limit, 20), now) }, nil
	}
	return 0, nil, nil
}

func (e *Exchange) serve(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	weight, body, err := e.endpoint(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{-1102, err.Error()})
		return
	}
	if weight == 0 {
		writeJSON(w, http.StatusNotFound, apiError{-1000, "unknown endpoint"})
		return
	}

	e.mu.Lock()
	win := e.roll(now)
	e.stats.Calls++
	status, retry := http.StatusOK, time.Duration(0)
	switch {
	case now.Before(e.banUntil):
		status, retry = http.StatusTeapot, e.banUntil.Sub(now)
	case e.used+weight > e.opts.Limit:
		if now.Before(e.retryUntil) {
			e.violations++
		}
		if e.violations >= e.opts.BanAfter {
			e.banUntil, e.violations = now.Add(e.opts.BanFor), 0
			status, retry = http.StatusTeapot, e.opts.BanFor
		} else {
			end := time.UnixMicro((win + 1) * e.opts.Window.Microseconds())
			e.retryUntil = end
			status, retry = http.StatusTooManyRequests, end.Sub(now)
		}
	default:
		e.used += weight
		e.stats.Weight += int64(weight)
		e.stats.Windows[time.UnixMicro(win*e.opts.Window.Microseconds())] += weight
	}
	switch status {
	case http.StatusOK:
		e.stats.OK++
	case http.StatusTooManyRequests:
		e.stats.TooManyRequests++
	case http.StatusTeapot:
		e.stats.Banned++
	}
	used := e.used
	e.mu.Unlock()

	h := w.Header()
	h.Set(e.UsageHeader(), strconv.Itoa(used))
	// Date is when the request was counted, so that a client can tell which
	// window a usage count belongs to.
	h.Set("Date", now.UTC().Format(http.TimeFormat))
	e.latency(r)
	switch status {
	case http.StatusOK:
		writeJSON(w, status, body(now))
	case http.StatusTooManyRequests:
		h.Set("Retry-After", strconv.Itoa(ceilSeconds(retry)))
		writeJSON(w, status, apiError{-1003, "Too much request weight used; current limit is " +
			strconv.Itoa(e.opts.Limit) + " request weight per " + e.Interval() + "."})
	default:
		h.Set("Retry-After", strconv.Itoa(ceilSeconds(retry)))
		writeJSON(w, status, apiError{-1003, "Way too much request weight used; IP banned until " +
			now.Add(retry).UTC().Format(time.RFC3339) + "."})
	}
}

// latency sleeps the simulated processing and network time.
func (e *Exchange) latency(r *http.Request) {
	d := e.opts.MinLatency
	if span := e.opts.MaxLatency - e.opts.MinLatency; span > 0 {
		d += rand.N(span)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

func ceilSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

type apiError struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Ticker24hr is the body of GET /api/v3/ticker/24hr for one symbol, the fields
// the examples read. Binance sends prices and quantities as strings.
type Ticker24hr struct {
	Symbol    string `json:"symbol"`
	LastPrice string `json:"lastPrice"`
	BidPrice  string `json:"bidPrice"`
	AskPrice  string `json:"askPrice"`
	HighPrice string `json:"highPrice"`
	LowPrice  string `json:"lowPrice"`
	Volume    string `json:"volume"`
	CloseTime int64  `json:"closeTime"`
}

// Depth is the body of GET /api/v3/depth: levels as [price, quantity] strings,
// bids best (highest) first, asks best (lowest) first.
type Depth struct {
	LastUpdateID int64       `json:"lastUpdateId"`
	Bids         [][2]string `json:"bids"`
	Asks         [][2]string `json:"asks"`
}

// price is a symbol's simulated mid price at now: a base price by symbol,
// drifting slowly.
func price(symbol string, now time.Time) float64 {
	base := 1.0
	switch {
	case strings.HasPrefix(symbol, "BTC"):
		base = 45000
	case strings.HasPrefix(symbol, "ETH"):
		base = 2500
	case strings.HasPrefix(symbol, "BNB"):
		base = 600
	case strings.HasPrefix(symbol, "SOL"):
		base = 100
	default:
		for _, c := range symbol {
			base += float64(c % 7)
		}
	}
	t := float64(now.UnixMilli()) / 1000
	return base * (1 + 0.002*math.Sin(t/3+float64(len(symbol))))
}

func fmtF(f float64) string { return strconv.FormatFloat(f, 'f', 8, 64) }

func ticker(symbol string, now time.Time) Ticker24hr {
	p := price(symbol, now)
	tick := p * 1e-5
	return Ticker24hr{
		Symbol: symbol, LastPrice: fmtF(p), BidPrice: fmtF(p - tick), AskPrice: fmtF(p + tick),
		HighPrice: fmtF(p * 1.02), LowPrice: fmtF(p * 0.98), Volume: fmtF(1e7 / p),
		CloseTime: now.UnixMilli(),
	}
}

func depth(symbol string, levels int, now time.Time) Depth {
	p := price(symbol, now)
	tick := p * 1e-5
	d := Depth{LastUpdateID: now.UnixMicro()}
	for i := 1; i <= levels; i++ {
		size := fmtF(0.5 + float64(i%5)/4)
		d.Bids = append(d.Bids, [2]string{fmtF(p - float64(i)*tick), size})
		d.Asks = append(d.Asks, [2]string{fmtF(p + float64(i)*tick), size})
	}
	return d
}

// Market converts the ticker to the market cache's type.
func (t Ticker24hr) Market() (market.Ticker, error) {
	var f [6]float64
	for i, v := range []string{t.LastPrice, t.BidPrice, t.AskPrice, t.HighPrice, t.LowPrice, t.Volume} {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return market.Ticker{}, fmt.Errorf("ticker %s: %w", t.Symbol, err)
		}
		f[i] = x
	}
	return market.Ticker{Symbol: t.Symbol, Price: f[0], Bid: f[1], Ask: f[2], High: f[3], Low: f[4],
		Volume: f[5], Time: time.UnixMilli(t.CloseTime)}, nil
}

// Market converts the book to the market cache's type.
func (d Depth) Market(symbol string) (market.OrderBook, error) {
	b := market.OrderBook{Symbol: symbol, Time: time.UnixMicro(d.LastUpdateID)}
	var err error
	if b.Bids, err = levels(d.Bids); err != nil {
		return market.OrderBook{}, fmt.Errorf("depth %s bids: %w", symbol, err)
	}
	if b.Asks, err = levels(d.Asks); err != nil {
		return market.OrderBook{}, fmt.Errorf("depth %s asks: %w", symbol, err)
	}
	return b, nil
}

func levels(in [][2]string) ([]market.Level, error) {
	out := make([]market.Level, len(in))
	for i, l := range in {
		p, err := strconv.ParseFloat(l[0], 64)
		if err != nil {
			return nil, err
		}
		s, err := strconv.ParseFloat(l[1], 64)
		if err != nil {
			return nil, err
		}
		out[i] = market.Level{Price: p, Size: s}
	}
	return out, nil
}
