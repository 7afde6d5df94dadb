package market

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/internal/cacheops"
	"github.com/redquota/redquota/internal/otelx"
	"github.com/redquota/redquota/telemetry"
)

// Telemetry names, listed with their attributes in TELEMETRY_NAMES.md.
//
// Market spans are the parents of the cache spans (and those of the redis
// commands) a call makes. They name the kind of data and the exchange or
// strategy (configuration), never a symbol, an endpoint, a value or an
// error's text (a validation error quotes a price; a fetch error may quote a
// URL with its query): errors are described by a class.
const (
	metricRequests = "redquota.market.requests"
	metricAPICalls = "redquota.market.api_calls"

	attrKind     = attribute.Key("redquota.market.kind")
	attrExchange = attribute.Key("redquota.market.exchange")
	attrStrategy = attribute.Key("redquota.market.strategy")
	attrInterval = attribute.Key("redquota.market.interval")
	attrSymbols  = attribute.Key("redquota.symbols")
	attrVisited  = attribute.Key("redquota.exchanges")
	attrHit      = otelx.Hit
	attrFound    = otelx.Found
	attrDeleted  = otelx.Deleted
)

// kind is the data a call touches: the value of redquota.market.kind.
type kind uint8

const (
	kindTicker kind = iota
	kindOrderBook
	kindTrades
	kindCandles
	kindSignal
	kindAPICalls
	kindExchange // InvalidateExchange: all of an exchange's market data
	kindSymbol   // InvalidateSymbol: a symbol's data on every exchange
	numKinds
)

var kindNames = [numKinds]string{"ticker", "orderbook", "trades", "candles", "signal", "api_calls", "exchange", "symbol"}

// mop is a market operation: a span name and the value of redquota.op.
type mop uint8

const (
	mopGet mop = iota
	mopSet
	mopGetMany
	mopSetMany
	mopFetch
	mopInvalidate
	mopIncr
	mopCount
	numMops
)

var mops = [numMops]struct{ span, name string }{
	mopGet:        {"redquota.market.Get", "get"},
	mopSet:        {"redquota.market.Set", "set"},
	mopGetMany:    {"redquota.market.GetMany", "get_many"},
	mopSetMany:    {"redquota.market.SetMany", "set_many"},
	mopFetch:      {"redquota.market.GetOrFetch", "get_or_fetch"},
	mopInvalidate: {"redquota.market.Invalidate", "invalidate"},
	mopIncr:       {"redquota.market.IncrementAPICalls", "incr"},
	mopCount:      {"redquota.market.APICalls", "count"},
}

// result is the value of redquota.result: hit or miss for reads, fetched for
// a GetOrFetch that called its fetch function, ok for other calls that
// succeeded, error for a call that returned an error.
type result = otelx.Outcome

const resultHit, resultFetched, resultError = otelx.OutcomeHit, otelx.OutcomeFetched, otelx.OutcomeError

// instruments are a Market's tracer and instruments, with the attribute
// options of every (kind, op, result) built once: recording allocates nothing.
type instruments struct {
	tracer   trace.Tracer
	requests metric.Int64Counter
	apiCalls metric.Int64Counter
	addOpts  [numKinds][numMops][otelx.NumOutcomes][]metric.AddOption
	// exchange → the options of redquota.market.api_calls, built on first use.
	callOpts sync.Map
}

func (m *Market) initTelemetry(p telemetry.Providers) {
	in := &m.tel
	in.tracer = otelx.Tracer(p)
	mt := otelx.Meter(p)
	in.requests = otelx.Counter(mt, metricRequests, "{request}",
		"Market calls by kind of data, operation and result (hit, miss, fetched, ok, error).")
	in.apiCalls = otelx.Counter(mt, metricAPICalls, "{call}",
		"API calls counted with IncrementAPICalls, by exchange.")
	for k := range kindNames {
		for o := range mops {
			for r := range otelx.NumOutcomes {
				in.addOpts[k][o][r] = otelx.AddOpts(attrKind.String(kindNames[k]),
					otelx.Op.String(mops[o].name), r.Attr())
			}
		}
	}
}

// start begins the span of an operation on data of kind k, as a child of the
// caller's span; owner is the exchange or strategy attribute, when there is
// one. Without a recording span in ctx it starts none.
func (m *Market) start(ctx context.Context, o mop, k kind, owner attribute.Key, name string) (context.Context, trace.Span) {
	ctx, span := otelx.Start(ctx, m.tel.tracer, mops[o].span)
	if span.IsRecording() {
		span.SetAttributes(attrKind.String(kindNames[k]), otelx.Op.String(mops[o].name))
		if owner != "" {
			span.SetAttributes(owner.String(name))
		}
	}
	return ctx, span
}

// finish counts a call and ends its span with its result and, on an error,
// an error status described by the error's class.
func (m *Market) finish(ctx context.Context, span trace.Span, o mop, k kind, r result, err error) {
	if m.tel.requests != nil {
		m.tel.requests.Add(ctx, 1, m.tel.addOpts[k][o][r]...)
	}
	if !span.IsRecording() {
		return
	}
	class := ""
	if err != nil {
		class = errorClass(err)
		if o == mopFetch && class == "redis" {
			class = "fetch" // GetOrFetch fails only with bad input or the fetch function's error
		}
	}
	otelx.End(span, class, r.Attr())
}

// read is the result of a read: error, hit or miss; resultOf is error or ok.
var read, resultOf = otelx.ReadOutcome, otelx.OutcomeOf

// countCall counts an API call of exchange.
func (m *Market) countCall(ctx context.Context, exchange string) {
	if m.tel.apiCalls == nil {
		return
	}
	opts, ok := m.tel.callOpts.Load(exchange)
	if !ok {
		opts, _ = m.tel.callOpts.LoadOrStore(exchange, otelx.AddOpts(attrExchange.String(exchange)))
	}
	m.tel.apiCalls.Add(ctx, 1, opts.([]metric.AddOption)...)
}

// errorClass describes err for a span without its text: the cache's classes,
// bad market input being the cache's ErrInvalid too.
func errorClass(err error) string { return cacheops.Class(err) }

// spanHit sets redquota.hit on a read's span.
func spanHit(span trace.Span, found bool) {
	if span.IsRecording() {
		span.SetAttributes(attrHit.Bool(found))
	}
}

// spanInterval sets redquota.market.interval on a candles span.
func spanInterval(span trace.Span, iv Interval) {
	if span.IsRecording() {
		span.SetAttributes(attrInterval.String(string(iv)))
	}
}

// spanCount sets a count (values deleted, exchanges visited) on an invalidation's span.
func spanCount(span trace.Span, k attribute.Key, n int) {
	if span.IsRecording() {
		span.SetAttributes(k.Int(n))
	}
}
