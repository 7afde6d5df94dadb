package market_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
	"github.com/redquota/redquota/market"
)

func TestMain(m *testing.M) { redistest.Main(m) }

var epoch = time.Date(2025, 1, 15, 12, 0, 0, 0, time.UTC)

type env struct {
	t   *testing.T
	b   redistest.Backend
	c   *cache.Cache
	m   *market.Market
	now time.Time
	hk  *hook
}

func newEnv(t *testing.T, b redistest.Backend, o market.Options) *env {
	t.Helper()
	ctx := context.Background()
	if b.Mini != nil {
		b.Mini.SetTime(epoch)
	}
	if err := script.Load(ctx, b.Client); err != nil { // so each script call is one EVALSHA
		t.Fatal(err)
	}
	e := &env{t: t, b: b, now: epoch, hk: &hook{}}
	b.Client.AddHook(e.hk)
	// No per-call timeout: these tests count fetches and calls, and a 100-way
	// race under -race on a loaded machine can hold a miniredis reply past
	// it, which turns a late hit into a miss and a second fetch.
	e.c = cache.New(b.Client, cache.Options{Prefix: b.Prefix, Timeout: -1})
	e.m = market.New(e.c, o)
	market.SetClock(e.m, func() time.Time { return e.now })
	return e
}

func (e *env) advance(d time.Duration) {
	e.now = e.now.Add(d)
	e.b.Mini.SetTime(e.now)
	e.b.Mini.FastForward(d)
}

// pttl returns the TTL of a raw key.
func (e *env) pttl(k string) time.Duration {
	e.t.Helper()
	d, err := e.b.Client.PTTL(context.Background(), k).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

type hook struct{ calls atomic.Int64 }

func (h *hook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n != "hello" && n != "client" {
			h.calls.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() != "hello" && cmds[0].Name() != "client" {
			h.calls.Add(1)
		}
		return next(ctx, cmds)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var (
	btc  = market.Ticker{Symbol: "BTC-USDT", Price: 45000.50, Volume: 1500.25, High: 45500, Low: 44500, Bid: 45000.25, Ask: 45000.75, Time: epoch}
	book = market.OrderBook{Symbol: "BTC-USDT",
		Bids: []market.Level{{45000, 1.5}, {44999.5, 2}},
		Asks: []market.Level{{45001, 1.2}, {45002, 3.5}}, Time: epoch}
	trades  = []market.Trade{{ID: "1", Symbol: "BTC-USDT", Price: 45000.5, Size: 0.1, Side: "buy", Time: epoch}}
	candles = []market.Candle{{Start: epoch, Open: 45000, High: 45100, Low: 44900, Close: 45050, Volume: 12.5}}
	signal  = market.Signal{Action: "BUY", Price: 45000, Confidence: 0.85, Strategy: "momentum", Symbol: "BTC", Time: epoch}
)

// Every kind round-trips and lives exactly its TTL: the seed's defaults, and
// per-instance overrides.
func TestKindsAndTTLs(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		for _, o := range []market.Options{{}, {TickerTTL: time.Second, OrderBookTTL: 200 * time.Millisecond, CandlesTTL: 90 * time.Second, SignalTTL: time.Minute}} {
			e := newEnv(t, b, o)
			m := e.m
			ttl := market.TTLs(m)
			type kind struct {
				name string
				key  string // raw key
				ttl  time.Duration
				get  func() bool
			}
			set := time.Now()
			must(t, m.SetTicker(ctx, "binance", "BTC-USDT", btc))
			must(t, market.Set(ctx, m, "binance", "BTC-USDT", book))
			must(t, market.Set(ctx, m, "binance", "BTC-USDT", trades))
			must(t, market.Set(ctx, m, "binance", "BTC-USDT", candles, "1m"))
			must(t, market.Set(ctx, m, "binance", "BTC-USDT", candles, "5m"))
			must(t, m.SetSignal(ctx, "momentum", "BTC", signal, 0))
			ck := func(i market.Interval) time.Duration {
				if o.CandlesTTL > 0 {
					return o.CandlesTTL
				}
				d, _ := market.IntervalDuration(i)
				return d
			}
			h := b.Prefix + ":v:{binance}:"
			kinds := []kind{
				{"ticker", h + "ticker%3ABTC-USDT", ttl.TickerTTL, func() bool {
					v, ok, err := m.GetTicker(ctx, "binance", "BTC-USDT")
					must(t, err)
					if ok && v != btc {
						t.Fatalf("ticker %+v", v)
					}
					return ok
				}},
				{"book", h + "book%3ABTC-USDT", ttl.OrderBookTTL, func() bool {
					v, ok, err := market.Get[market.OrderBook](ctx, m, "binance", "BTC-USDT")
					must(t, err)
					if ok && (fmt.Sprint(v) != fmt.Sprint(book) || !v.Time.Equal(epoch)) {
						t.Fatalf("book %+v", v)
					}
					return ok
				}},
				{"trades", h + "trades%3ABTC-USDT", ttl.TradesTTL, func() bool {
					v, ok, err := market.Get[[]market.Trade](ctx, m, "binance", "BTC-USDT")
					must(t, err)
					if ok && (len(v) != 1 || v[0].Price != 45000.5 || v[0].Side != "buy") {
						t.Fatalf("trades %+v", v)
					}
					return ok
				}},
				{"candles 1m", h + "candles%3ABTC-USDT%3A1m", ck("1m"), func() bool {
					v, ok, err := market.Get[[]market.Candle](ctx, m, "binance", "BTC-USDT", "1m")
					must(t, err)
					if ok && (len(v) != 1 || v[0].Close != 45050) {
						t.Fatalf("candles %+v", v)
					}
					return ok
				}},
				{"candles 5m", h + "candles%3ABTC-USDT%3A5m", ck("5m"), func() bool {
					_, ok, err := market.Get[[]market.Candle](ctx, m, "binance", "BTC-USDT", "5m")
					must(t, err)
					return ok
				}},
				{"signal", b.Prefix + ":v:{momentum}:signal%3ABTC", ttl.SignalTTL, func() bool {
					v, ok, err := market.Get[market.Signal](ctx, m, "momentum", "BTC")
					must(t, err)
					if ok && v.Confidence != 0.85 {
						t.Fatalf("signal %+v", v)
					}
					return ok
				}},
			}
			if o.TickerTTL == 0 && (ttl.TickerTTL != 2*time.Second || ttl.OrderBookTTL != 500*time.Millisecond ||
				ttl.TradesTTL != 10*time.Second || ttl.SignalTTL != 30*time.Second || ck("1m") != time.Minute || ck("5m") != 5*time.Minute) {
				t.Fatalf("defaults %+v", ttl)
			}
			for _, k := range kinds {
				if !k.get() {
					t.Fatalf("%s missing right after Set", k.name)
				}
				// A real Redis's TTL counts down in real time from the write:
				// allow what has passed since, on a loaded machine over 100 ms.
				if d := e.pttl(k.key); d > k.ttl || d < k.ttl-max(100*time.Millisecond, time.Since(set)) {
					t.Fatalf("%s PTTL %v, want %v", k.name, d, k.ttl)
				}
			}
			if b.Mini == nil {
				continue // real Redis expiry: see TestOrderBookExpiresOnRealRedis
			}
			// Expiry, kind by kind, in order of TTL.
			start := e.now
			sort.Slice(kinds, func(i, j int) bool { return kinds[i].ttl < kinds[j].ttl })
			for _, k := range kinds {
				if d := start.Add(k.ttl - time.Millisecond).Sub(e.now); d >= 0 {
					e.advance(d)
					if !k.get() {
						t.Fatalf("%s gone 1 ms before its TTL %v", k.name, k.ttl)
					}
					e.advance(time.Millisecond)
				} // else a kind of the same TTL was just checked: now is its TTL
				if k.get() {
					t.Fatalf("%s still there at its TTL %v", k.name, k.ttl)
				}
			}
		}
	})
}

// The 500 ms order book expires on real Redis too. Real Redis keeps its own
// clock, so the test polls: every 20 ms, for at most 3 s (six times the TTL, so
// only a book that never expires fails). It asserts no timing, only presence
// right after the write and absence within the bound.
func TestOrderBookExpiresOnRealRedis(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, market.Options{})
		ctx := context.Background()
		must(t, market.Set(ctx, e.m, "binance", "BTC-USDT", book))
		if _, ok, err := market.Get[market.OrderBook](ctx, e.m, "binance", "BTC-USDT"); !ok || err != nil {
			t.Fatalf("book missing after Set: %v", err)
		}
		start := time.Now()
		for {
			_, ok, err := market.Get[market.OrderBook](ctx, e.m, "binance", "BTC-USDT")
			must(t, err)
			if !ok {
				break
			}
			if time.Since(start) > 3*time.Second {
				t.Fatal("500 ms order book still cached after 3 s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("order book gone %v after the write was confirmed", time.Since(start).Round(time.Millisecond))
	})
}

// SetTickers is one script call and GetTickers one MGET, whatever the count.
func TestTickerBatches(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, market.Options{})
		ctx := context.Background()
		in := map[string]market.Ticker{}
		var syms []string
		for i := 0; i < 20; i++ {
			s := fmt.Sprintf("SYM%d-USDT", i)
			tk := btc
			tk.Symbol, tk.Price = s, float64(i)+0.5
			in[s], syms = tk, append(syms, s)
		}
		must(t, e.m.SetTickers(ctx, "binance", map[string]market.Ticker{"WARM": btc})) // registers binance
		before := e.hk.calls.Load()
		must(t, e.m.SetTickers(ctx, "binance", in))
		if d := e.hk.calls.Load() - before; d != 1 {
			t.Fatalf("SetTickers made %d calls, want 1", d)
		}
		before = e.hk.calls.Load()
		got, err := e.m.GetTickers(ctx, "binance", append(syms, "NOPE"))
		if d := e.hk.calls.Load() - before; d != 1 {
			t.Fatalf("GetTickers made %d calls, want 1", d)
		}
		if err != nil || len(got) != len(in) {
			t.Fatalf("GetTickers: %d, %v", len(got), err)
		}
		for s, tk := range in {
			if got[s] != tk {
				t.Fatalf("%s: %+v", s, got[s])
			}
		}
	})
}

func TestInvalidation(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, market.Options{})
		ctx := context.Background()
		m := e.m
		for _, ex := range []string{"binance", "kraken"} {
			for _, sym := range []string{"BTC-USDT", "ETH-USDT"} {
				must(t, m.SetTicker(ctx, ex, sym, btc))
				must(t, market.Set(ctx, m, ex, sym, book))
				must(t, market.Set(ctx, m, ex, sym, trades))
				must(t, market.Set(ctx, m, ex, sym, candles, "1h"))
			}
			_, err := m.IncrementAPICalls(ctx, ex, "/api/v3/ticker", 0)
			must(t, err)
		}
		for _, st := range []string{"momentum", "meanrev"} {
			must(t, m.SetSignal(ctx, st, "BTC", signal, 0))
			must(t, m.SetSignal(ctx, st, "ETH", signal, 0))
		}
		has := func(ex, sym string) (n int) {
			if _, ok, _ := m.GetTicker(ctx, ex, sym); ok {
				n++
			}
			if _, ok, _ := market.Get[market.OrderBook](ctx, m, ex, sym); ok {
				n++
			}
			if _, ok, _ := market.Get[[]market.Trade](ctx, m, ex, sym); ok {
				n++
			}
			if _, ok, _ := market.Get[[]market.Candle](ctx, m, ex, sym, "1h"); ok {
				n++
			}
			return n
		}
		if ex, _ := market.Exchanges(ctx, m); fmt.Sprint(ex) != "[binance kraken]" && fmt.Sprint(ex) != "[kraken binance]" {
			t.Fatalf("Exchanges = %v", ex)
		}
		// A symbol, across every exchange.
		n, err := m.InvalidateSymbol(ctx, "BTC-USDT")
		if err != nil || n != 2 {
			t.Fatalf("InvalidateSymbol = %d, %v", n, err)
		}
		if has("binance", "BTC-USDT")+has("kraken", "BTC-USDT") != 0 || has("binance", "ETH-USDT") != 4 || has("kraken", "ETH-USDT") != 4 {
			t.Fatal("InvalidateSymbol deleted the wrong data")
		}
		// One exchange.
		n, err = m.InvalidateExchange(ctx, "binance")
		if err != nil || n != 4 {
			t.Fatalf("InvalidateExchange = %d, %v; want the 4 ETH values left", n, err)
		}
		if has("binance", "ETH-USDT") != 0 || has("kraken", "ETH-USDT") != 4 {
			t.Fatal("InvalidateExchange deleted the wrong data")
		}
		if c, _ := m.APICalls(ctx, "binance", "/api/v3/ticker", 0); c != 1 {
			t.Fatalf("API counter lost to InvalidateExchange: %d", c)
		}
		if _, ok, _ := market.Get[market.Signal](ctx, m, "momentum", "BTC"); !ok {
			t.Fatal("signals deleted by exchange invalidation")
		}
		// One strategy, then all.
		if n, err := m.InvalidateSignals(ctx, "momentum"); err != nil || n != 2 {
			t.Fatalf("InvalidateSignals = %d, %v", n, err)
		}
		if _, ok, _ := market.Get[market.Signal](ctx, m, "meanrev", "BTC"); !ok {
			t.Fatal("other strategy's signal deleted")
		}
		if n, err := m.InvalidateSignals(ctx); err != nil || n != 2 {
			t.Fatalf("InvalidateAllSignals = %d, %v", n, err)
		}
		if _, ok, _ := market.Get[market.Signal](ctx, m, "meanrev", "ETH"); ok {
			t.Fatal("signal survived InvalidateAllSignals")
		}
	})
}

func TestAPICalls(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, market.Options{})
		ctx := context.Background()
		for i := 1; i <= 3; i++ {
			n, err := e.m.IncrementAPICalls(ctx, "binance", "/api/v3/ticker", 0)
			if err != nil || n != i {
				t.Fatalf("call %d: %d %v", i, n, err)
			}
		}
		if n, _ := e.m.IncrementAPICalls(ctx, "binance", "/api/v3/depth", 0); n != 1 {
			t.Fatalf("other endpoint shares the count: %d", n)
		}
		if n, _ := e.m.IncrementAPICalls(ctx, "binance", "/api/v3/ticker", 10*time.Second); n != 1 {
			t.Fatalf("other window shares the count: %d", n)
		}
		if n, err := e.m.APICalls(ctx, "binance", "/api/v3/ticker", 0); err != nil || n != 3 {
			t.Fatalf("APICalls = %d, %v", n, err)
		}
		if n, _ := e.m.APICalls(ctx, "kraken", "/api/v3/ticker", 0); n != 0 {
			t.Fatalf("kraken: %d", n)
		}
		k := b.Prefix + ":v:{binance}:calls%3A/api/v3/ticker%3A60000"
		if d := e.pttl(k); d <= 59*time.Second || d > time.Minute {
			t.Fatalf("counter PTTL %v, want the 60 s window", d)
		}
		if b.Mini != nil {
			e.advance(time.Minute)
			if n, _ := e.m.APICalls(ctx, "binance", "/api/v3/ticker", 0); n != 0 {
				t.Fatalf("count after the window: %d", n)
			}
		}
	})
}

// A miss fetches once for 100 concurrent callers; a hit does not fetch; a fetch
// error is returned and not cached; fetched data is tagged with its exchange.
func TestFetchThrough(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, market.Options{})
		ctx := context.Background()
		var fetches atomic.Int64
		release := make(chan struct{})
		fetch := func(context.Context) (market.Ticker, error) {
			fetches.Add(1)
			<-release
			return btc, nil
		}
		var wg sync.WaitGroup
		var bad atomic.Int64
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := market.OrFetch(ctx, e.m, "binance", "BTC-USDT", fetch)
				if err != nil || v != btc {
					bad.Add(1)
				}
			}()
		}
		for fetches.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		close(release)
		wg.Wait()
		if fetches.Load() != 1 || bad.Load() != 0 {
			t.Fatalf("%d fetches (want 1), %d bad results", fetches.Load(), bad.Load())
		}
		// fetch runs in singleflight's goroutine: it must not call t.Fatal,
		// whose Goexit there would leave this caller waiting for ever.
		if _, err := market.OrFetch(ctx, e.m, "binance", "BTC-USDT", func(context.Context) (market.Ticker, error) {
			return market.Ticker{}, errors.New("fetch on a hit")
		}); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("429")
		calls := 0
		failing := func(context.Context) (market.OrderBook, error) { calls++; return market.OrderBook{}, boom }
		for i := 0; i < 2; i++ {
			if _, err := market.OrFetch(ctx, e.m, "binance", "BTC-USDT", failing); !errors.Is(err, boom) {
				t.Fatalf("fetch error: %v", err)
			}
		}
		if calls != 2 {
			t.Fatalf("failed fetch was cached: %d calls", calls)
		}
		if n, err := e.m.InvalidateExchange(ctx, "binance"); err != nil || n != 1 {
			t.Fatalf("fetched ticker not reached by InvalidateExchange: %d %v", n, err)
		}
	})
}

func TestBadInput(t *testing.T) {
	_, client := redistest.NewMini(t)
	m := market.New(cache.New(client, cache.Options{}), market.Options{})
	ctx := context.Background()
	nan := btc
	nan.Price = math.NaN()
	inf := btc
	inf.Ask = math.Inf(1)
	neg := btc
	neg.Volume = -1
	unsorted := book
	unsorted.Bids = []market.Level{{44999, 1}, {45000, 1}}
	negLevel := book
	negLevel.Asks = []market.Level{{45001, -1}}
	crossed := book
	crossed.Bids = []market.Level{{45005, 1}}
	badSig := signal
	badSig.Confidence = 1.5
	cases := []struct {
		name string
		err  error
		call func() error
	}{
		{"empty exchange", market.ErrInvalid, func() error { return m.SetTicker(ctx, "", "BTC", btc) }},
		{"empty symbol", market.ErrInvalid, func() error { return m.SetTicker(ctx, "binance", "", btc) }},
		{"empty symbol get", market.ErrInvalid, func() error { _, _, err := m.GetTicker(ctx, "binance", ""); return err }},
		{"empty strategy", market.ErrInvalid, func() error { return m.SetSignal(ctx, "", "BTC", signal, 0) }},
		{"empty endpoint", market.ErrInvalid, func() error { _, err := m.IncrementAPICalls(ctx, "binance", "", 0); return err }},
		{"NaN price", market.ErrInvalid, func() error { return m.SetTicker(ctx, "binance", "BTC", nan) }},
		{"Inf ask", market.ErrInvalid, func() error { return m.SetTickers(ctx, "binance", map[string]market.Ticker{"BTC": inf}) }},
		{"negative volume", market.ErrInvalid, func() error { return m.SetTicker(ctx, "binance", "BTC", neg) }},
		{"unsorted bids", market.ErrInvalid, func() error { return market.Set(ctx, m, "binance", "BTC", unsorted) }},
		{"negative level", market.ErrInvalid, func() error { return market.Set(ctx, m, "binance", "BTC", negLevel) }},
		{"unknown interval", market.ErrInvalid, func() error { return market.Set(ctx, m, "binance", "BTC", candles, "7m") }},
		{"unknown interval get", market.ErrInvalid, func() error { _, _, err := market.Get[[]market.Candle](ctx, m, "binance", "BTC", "2m"); return err }},
		{"bad confidence", market.ErrInvalid, func() error { return m.SetSignal(ctx, "momentum", "BTC", badSig, 0) }},
		{"long symbol", cache.ErrInvalid, func() error { return m.SetTicker(ctx, "binance", strings.Repeat("X", 600), btc) }},
		// A nil fetch function used to panic inside the load, raised again in the caller.
		{"nil fetch", market.ErrInvalid, func() error {
			_, err := market.OrFetch[market.Ticker](ctx, m, "binance", "BTC", nil)
			return err
		}},
	}
	for _, tc := range cases {
		if err := tc.call(); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
	if n, _ := client.DBSize(ctx).Result(); n != 0 {
		t.Fatalf("bad input wrote %d keys", n)
	}
	// A Market on a nil cache (a forgotten cache.New) used to panic with a
	// nil pointer dereference; each call is now ErrInvalid.
	nilM := market.New(nil, market.Options{})
	for name, call := range map[string]func() error{
		"SetTicker": func() error { return nilM.SetTicker(ctx, "binance", "BTC", btc) },
		"GetTicker": func() error { _, _, err := nilM.GetTicker(ctx, "binance", "BTC"); return err },
		"OrFetch": func() error {
			_, err := market.OrFetch(ctx, nilM, "binance", "BTC", func(context.Context) (market.Ticker, error) { return btc, nil })
			return err
		},
		"InvalidateSymbol":  func() error { _, err := nilM.InvalidateSymbol(ctx, "BTC"); return err },
		"InvalidateSignals": func() error { _, err := nilM.InvalidateSignals(ctx); return err },
		"APICalls":          func() error { _, err := nilM.APICalls(ctx, "binance", "/x", 0); return err },
	} {
		if err := call(); !errors.Is(err, market.ErrInvalid) || !strings.Contains(err.Error(), "nil cache") {
			t.Errorf("nil cache, %s: %v, want ErrInvalid naming the nil cache", name, err)
		}
	}
	// A crossed book is accepted, as documented.
	if err := market.Set(ctx, m, "binance", "BTC", crossed); err != nil {
		t.Fatalf("crossed book refused: %v", err)
	}
}

// Candles live until their interval's next boundary, on UTC boundaries as
// exchanges draw them, so a series never outlives the candle open when it
// was fetched; known intervals include 1s and the calendar month.
func TestCandleBoundaries(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		iv        market.Interval
		now, want string
	}{
		{"1s", "2025-01-15T12:00:00.25Z", "2025-01-15T12:00:01Z"},
		{"1m", "2025-01-15T11:59:59.5Z", "2025-01-15T12:00:00Z"},
		{"1m", "2025-01-15T12:00:00Z", "2025-01-15T12:01:00Z"},
		{"4h", "2025-01-15T13:00:00Z", "2025-01-15T16:00:00Z"},
		{"1d", "2025-01-15T23:00:00+02:00", "2025-01-16T00:00:00Z"}, // 21:00 UTC
		{"3d", "2025-01-15T12:00:00Z", "2025-01-18T00:00:00Z"},      // day 20103 since the epoch = 3·6701: a 3d candle opened at 00:00
		{"1w", "2025-01-15T12:00:00Z", "2025-01-20T00:00:00Z"},      // a Wednesday: next Monday
		{"1w", "2025-01-20T00:00:00Z", "2025-01-27T00:00:00Z"},
		{"1M", "2024-12-31T23:59:59Z", "2025-01-01T00:00:00Z"},
		{"1M", "2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z"},
	} {
		got, err := market.IntervalNext(c.iv, at(c.now))
		if err != nil || !got.Equal(at(c.want)) {
			t.Errorf("%s.next(%s) = %v %v, want %s", c.iv, c.now, got, err, c.want)
		}
	}
	if _, err := market.IntervalNext(market.Interval("2M"), epoch); !errors.Is(err, market.ErrInvalid) {
		t.Fatalf("unknown interval: %v", err)
	}

	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		e := newEnv(t, b, market.Options{})
		// Five seconds before the 1h candle closes. The PTTLs are read a
		// moment after the writes, on Redis's clock: a second of slack
		// covers a loaded machine's pause between the two (100 ms, as
		// before, left it little room), and still tells the candle's close
		// from a fixed TTL.
		e.now = at("2025-01-15T12:59:55Z")
		must(t, market.Set(ctx, e.m, "binance", "BTC-USDT", candles, "1h"))
		must(t, market.Set(ctx, e.m, "binance", "BTC-USDT", candles, "1M"))
		h := b.Prefix + ":v:{binance}:"
		if d := e.pttl(h + "candles%3ABTC-USDT%3A1h"); d > 5*time.Second || d < 4*time.Second {
			t.Fatalf("1h candles PTTL %v five seconds before the hour, want 5s", d)
		}
		month := at("2025-02-01T00:00:00Z").Sub(e.now)
		if d := e.pttl(h + "candles%3ABTC-USDT%3A1M"); d > month || d < month-time.Second {
			t.Fatalf("1M candles PTTL %v, want %v", d, month)
		}
	})
}

// OrFetch stores candles until the close of the candle that was open when
// the fetch began, measured when the value is stored: a fetch that takes
// 60 ms of the last 100 ms leaves a TTL of 40 ms (before, 100 ms: the TTL was
// taken before the fetch, so the value outlived its candle by the fetch's
// time), and one that ends after the close stores nothing (before, it stored
// the closed candle for another 100 ms). miniredis with an injected clock:
// the TTLs are exact.
func TestOrFetchCandleTTLAfterFetch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fetch time.Duration // how long the fetch takes
		opts  market.Options
		ttl   time.Duration // 0: nothing stored
	}{
		{name: "ends before the close", fetch: 60 * time.Millisecond, ttl: 40 * time.Millisecond},
		{name: "ends after the close", fetch: 150 * time.Millisecond},
		{name: "ends at the close", fetch: 100 * time.Millisecond},
		{name: "fixed CandlesTTL", fetch: 150 * time.Millisecond, opts: market.Options{CandlesTTL: 5 * time.Second}, ttl: 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mr, client := redistest.NewMini(t)
			b := redistest.Backend{Kind: redistest.Mini, Client: client, Mini: mr, Prefix: redistest.NewPrefix(t)}
			ctx := context.Background()
			e := newEnv(t, b, tc.opts)
			e.advance(59*time.Second + 900*time.Millisecond) // 100 ms before 12:01
			fetches := 0
			fetch := func(context.Context) ([]market.Candle, error) {
				fetches++
				e.advance(tc.fetch)
				return candles, nil
			}
			v, err := market.OrFetch(ctx, e.m, "binance", "BTC-USDT", fetch, "1m")
			if err != nil || len(v) != 1 || fetches != 1 {
				t.Fatalf("OrFetch: %v %v after %d fetches", v, err, fetches)
			}
			k := b.Prefix + ":v:{binance}:candles%3ABTC-USDT%3A1m"
			if tc.ttl == 0 {
				if mr.Exists(k) {
					t.Fatalf("a candle closed during its fetch was stored for %v", mr.TTL(k))
				}
				return
			}
			if got := e.pttl(k); got != tc.ttl {
				t.Fatalf("PTTL %v, want %v", got, tc.ttl)
			}
		})
	}
}

// A fetch of candles that itself fetches through the cache (a ticker here)
// stores what it fetched with that value's own TTL: the candle's close
// travelled on the context into the nested load, and a 2 s ticker fetched
// inside a 1h candles fetch was kept until the hour (review-s11: a 5 s value
// kept 15 h 48 m inside a 1d fetch).
func TestOrFetchCandleTTLStaysWithCandles(t *testing.T) {
	mr, client := redistest.NewMini(t)
	b := redistest.Backend{Kind: redistest.Mini, Client: client, Mini: mr, Prefix: redistest.NewPrefix(t)}
	ctx := context.Background()
	e := newEnv(t, b, market.Options{})
	_, err := market.OrFetch(ctx, e.m, "binance", "BTC-USDT", func(ctx context.Context) ([]market.Candle, error) {
		_, err := market.OrFetch(ctx, e.m, "binance", "BTC-USDT", func(context.Context) (market.Ticker, error) { return btc, nil })
		return candles, err
	}, "1h")
	must(t, err)
	if got := e.pttl(b.Prefix + ":v:{binance}:ticker%3ABTC-USDT"); got != 2*time.Second {
		t.Fatalf("ticker fetched inside a candles fetch: PTTL %v, want its own 2s", got)
	}
	if got := e.pttl(b.Prefix + ":v:{binance}:candles%3ABTC-USDT%3A1h"); got <= 2*time.Second {
		t.Fatalf("candles PTTL %v, want until the hour", got)
	}
}

// An exchange written to stays known for InvalidateSymbol as long as its data
// lives, even when RegistryTTL is shorter than the once-a-minute refresh; a
// signal that would never expire is refused.
func TestRegistryCoversData(t *testing.T) {
	// miniredis only: the test moves Redis's clock by half a minute.
	mr, client := redistest.NewMini(t)
	b := redistest.Backend{Kind: redistest.Mini, Client: client, Mini: mr, Prefix: redistest.NewPrefix(t)}
	ctx := context.Background()
	e := newEnv(t, b, market.Options{RegistryTTL: 30 * time.Second})
	must(t, e.m.SetTicker(ctx, "binance", "BTC-USDT", btc))
	e.advance(29 * time.Second)
	must(t, e.m.SetTicker(ctx, "binance", "BTC-USDT", btc)) // lives until 31 s: past the first registration
	e.advance(1500 * time.Millisecond)
	ex, err := market.Exchanges(ctx, e.m)
	if err != nil || len(ex) != 1 || ex[0] != "binance" {
		t.Fatalf("exchanges while a ticker lives: %v %v", ex, err)
	}
	if n, err := e.m.InvalidateSymbol(ctx, "BTC-USDT"); err != nil || n != 1 {
		t.Fatalf("InvalidateSymbol: %d %v, want the live ticker deleted", n, err)
	}

	err = e.m.SetSignal(ctx, "momentum", "BTC", signal, cache.NoExpiry)
	if !errors.Is(err, cache.ErrInvalid) {
		t.Fatalf("signal without expiry: %v", err)
	}
	if ok, _ := e.c.Group("momentum").Exists(ctx, "signal:BTC"); ok {
		t.Fatal("refused signal was written")
	}
}

// A Redis restarted without persistence loses the registry with the data; a
// value written after the restart must still be found by InvalidateSymbol and
// InvalidateSignals, not a minute later when the registration is refreshed.
func TestRegistryOutlivesRestart(t *testing.T) {
	srv := redistest.Private(t)
	client := srv.Client()
	defer client.Close()
	ctx := context.Background()
	m := market.New(cache.New(client, cache.Options{}), market.Options{})
	must(t, m.SetTicker(ctx, "binance", "BTC-USDT", btc))
	must(t, m.SetSignal(ctx, "momentum", "BTC", signal, 0))

	srv.Stop()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// The first call after the restart may meet a connection that died
	// with the old process; the write is retried until Redis takes it.
	deadline := time.Now().Add(5 * time.Second)
	for m.SetTicker(ctx, "binance", "BTC-USDT", btc) != nil {
		if time.Now().After(deadline) {
			t.Fatal("no write accepted after the restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	must(t, m.SetSignal(ctx, "momentum", "BTC", signal, 0))

	if n, err := m.InvalidateSymbol(ctx, "BTC-USDT"); err != nil || n != 1 {
		t.Fatalf("InvalidateSymbol after a restart: visited %d exchanges (%v), want binance's", n, err)
	}
	if _, found, err := m.GetTicker(ctx, "binance", "BTC-USDT"); err != nil || found {
		t.Fatalf("ticker after InvalidateSymbol: found %v (%v)", found, err)
	}
	if n, err := m.InvalidateSignals(ctx); err != nil || n != 1 {
		t.Fatalf("InvalidateSignals after a restart: deleted %d (%v), want momentum's signal", n, err)
	}
}
