package exchanges_test

import (
	"testing"
	"time"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/wsguard"
)

// The WebSocket API's costs are REST's, on the REST preset's quotas;
// connecting costs a connection and 2 weight; streams get Binance's
// per-connection figures; refusals hold the quota they name for the time
// between serverTime and retryAfter.
func TestBinanceWebSocketOptions(t *testing.T) {
	api, streams, err := exchanges.BinanceWebSocket(exchanges.BinanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := exchanges.Binance(exchanges.BinanceOptions{})
	if len(api.Connect) != 2 || api.Connect[0].Quota.Name != "binance-ws-connections" ||
		api.Connect[0].Cost["connections-5m"] != 1 || api.Connect[1].Quota.Name != rest.Quotas[0].Name ||
		api.Connect[1].Cost["weight-1m"] != 2 || api.Connect[1].Cost["raw-5m"] != 0 {
		t.Fatalf("api connect charges %+v", api.Connect)
	}
	if l, _ := testFind(api.Connect[0].Quota, "connections-5m"); l.Rate != 300 || l.Period != 5*time.Minute {
		t.Fatalf("connection limit %v", l)
	}
	if streams.MaxStreams != 1024 || streams.MessageRate != 4 || streams.Connect[0].Quota.Name != "binance-stream-connections" {
		t.Fatalf("streams %+v", streams)
	}
	for _, c := range []struct {
		msg    string
		id     string
		weight int
		orders int
	}{
		// Order placement weighs 0 when it succeeds since 2026-04-02
		// (binance-spot-api-docs CHANGELOG.md, entry of 2026-03-27), on the
		// WebSocket API as on REST.
		{`{"id":"a1","method":"order.place","params":{"symbol":"BTCUSDT","apiKey":"k1"}}`, "a1", 0, 1},
		{`{"id":7,"method":"v3/order.place","params":{"symbol":"BTCUSDT","apiKey":"k1"}}`, "7", 0, 1},
		{`{"id":"a2","method":"depth","params":{"symbol":"BTCUSDT","limit":500}}`, "a2", 25, 0},
		{`{"id":"a3","method":"ticker.price","params":{"symbols":["BTCUSDT","ETHUSDT"]}}`, "a3", 4, 0},
		{`{"id":"a4","method":"orderList.place.oco","params":{"apiKey":"k2"}}`, "a4", 0, 2},
		{`{"id":"a5","method":"order.place","params":{}}`, "a5", 0, 0}, // no apiKey: no account
		{`{"id":"a6","method":"no.such.method"}`, "a6", 1, 0},
	} {
		id, cs, err := api.Charges([]byte(c.msg))
		if err != nil {
			t.Fatal(err)
		}
		orders := 0
		if len(cs) > 1 {
			if cs[1].Quota.Name != "binance-orders" {
				t.Errorf("%s: second charge on %s", c.msg, cs[1].Quota.Name)
			}
			orders = cs[1].Cost["orders-10s"]
		}
		if id != c.id || cs[0].Quota.Name != "binance" || cs[0].Cost["weight-1m"] != c.weight || cs[0].Cost["raw-5m"] != 0 || orders != c.orders {
			t.Errorf("%s: id %q, charges %+v; want id %q, weight %d, orders %d", c.msg, id, cs, c.id, c.weight, c.orders)
		}
	}
	if _, _, err := api.Charges([]byte(`not json`)); err == nil {
		t.Error("a malformed request was priced")
	}
	ban := `{"id":"b1","status":418,"error":{"code":-1003,"msg":"banned","data":{"serverTime":1659142907531,"retryAfter":1659146400000}}}`
	rf := api.Refusals(wsguard.Signal{Message: []byte(ban)})
	want := time.Duration(1659146400000-1659142907531) * time.Millisecond
	if len(rf) != 2 || rf[0].Quota != "binance" || rf[0].ID != "b1" || rf[0].Hold != want || rf[1].Quota != "binance-ws-connections" || rf[1].Hold != want {
		t.Errorf("418: %+v", rf)
	}
	orders := `{"id":"b2","status":429,"error":{"code":-1015,"msg":"Too many new orders; current limit is 50 orders per 10 SECOND."}}`
	if rf := api.Refusals(wsguard.Signal{Message: []byte(orders)}); len(rf) != 1 || rf[0].Quota != "binance-orders" || rf[0].ID != "b2" || rf[0].Hold != 0 {
		t.Errorf("-1015: %+v", rf)
	}
	weight := `{"id":"b3","status":429,"error":{"code":-1003,"msg":"Too much request weight used","data":{"serverTime":1000,"retryAfter":4000}}}`
	if rf := api.Refusals(wsguard.Signal{Message: []byte(weight)}); len(rf) != 1 || rf[0].Quota != "binance" || rf[0].Hold != 3*time.Second {
		t.Errorf("429: %+v", rf)
	}
	for _, ok := range []string{`{"id":"c","status":200,"result":{}}`, `{"e":"trade","s":"BTCUSDT"}`} {
		if rf := api.Refusals(wsguard.Signal{Message: []byte(ok)}); len(rf) != 0 {
			t.Errorf("%s: %+v", ok, rf)
		}
	}
	if rf := streams.Refusals(wsguard.Signal{Close: &wsguard.CloseError{Code: 1008}}); len(rf) != 1 || rf[0].Quota != "binance-stream-connections" {
		t.Errorf("1008 on streams: %+v", rf)
	}
	if rf := streams.Refusals(wsguard.Signal{Close: &wsguard.CloseError{Code: 1000}}); len(rf) != 0 {
		t.Errorf("1000 on streams: %+v", rf)
	}
}
