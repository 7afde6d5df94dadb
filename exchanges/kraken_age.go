package exchanges

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/redquota/redquota/middleware"
)

// Kraken charges a cancel, edit or amend of an order by the order's age
// ("Spot Trading Limits", https://docs.kraken.com/exchange/guides/general/ratelimits,
// "Incrementing the rate counter", checked 2026-12-06): a fixed count, then a
// count that decays with the age since the order was placed or last amended,
// under 5, 10, 15, 45, 90 and 300 s.
var krakenAgeCosts = map[string][7]int{
	"CancelOrder": {0, 8, 6, 5, 4, 2, 1},
	"EditOrder":   {1, 6, 5, 4, 2, 1, 0},
	"AmendOrder":  {1, 3, 2, 1, 0, 0, 0},
}

// krakenAgeSteps are the ages under which each decaying count applies.
var krakenAgeSteps = [6]time.Duration{5 * time.Second, 10 * time.Second, 15 * time.Second, 45 * time.Second, 90 * time.Second, 300 * time.Second}

// krakenAgeCost is what endpoint adds to the trading counter for an order of
// age, with the thresholds multiplied by scale.
func krakenAgeCost(endpoint string, age time.Duration, s float64) int {
	c := krakenAgeCosts[endpoint]
	for i, under := range krakenAgeSteps {
		if age < scale(under, s) {
			return c[0] + c[1+i]
		}
	}
	return c[0]
}

// krakenBookMax bounds the orders a preset remembers; past it the oldest are
// forgotten (and charged as of unknown age).
const krakenBookMax = 1 << 16

// krakenBook remembers when this process saw each of its orders placed (or
// last amended): the time its AddOrder, EditOrder or AmendOrder answer came
// back, which is no earlier than Kraken's own, so an age read from it is never
// longer than Kraken's and a cost read from the table never lower. Orders
// placed through another process are not in it: they are charged as of
// unknown age (the most, KrakenOptions.CancelCost and EditCost).
type krakenBook struct {
	mu     sync.Mutex
	placed map[string]time.Time
	order  []string // txids in the order they were recorded, for eviction
	now    func() time.Time
}

func newKrakenBook() *krakenBook {
	return &krakenBook{placed: map[string]time.Time{}, now: time.Now}
}

// age is how long ago txid was placed, and whether it is known.
func (b *krakenBook) age(txid string) (time.Duration, bool) {
	if txid == "" {
		return 0, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.placed[txid]
	if !ok {
		return 0, false
	}
	return b.now().Sub(t), true
}

func (b *krakenBook) record(txid string) {
	if txid == "" || len(txid) > 64 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.placed[txid]; !ok {
		// Forget the oldest recorded while full; b.order also holds txids
		// already forgotten, which are skipped, and is compacted when they
		// make up most of it (orders placed and cancelled all day).
		for len(b.placed) >= krakenBookMax && len(b.order) > 0 {
			delete(b.placed, b.order[0])
			b.order = b.order[1:]
		}
		if len(b.order) >= 2*krakenBookMax {
			live := make([]string, 0, len(b.placed)+1)
			for _, id := range b.order {
				if _, ok := b.placed[id]; ok {
					live = append(live, id)
				}
			}
			b.order = live
		}
		b.order = append(b.order, txid)
	}
	b.placed[txid] = b.now()
}

func (b *krakenBook) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.placed)
	b.order = nil
}

func (b *krakenBook) forget(txid string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.placed, txid)
}

// ParseUsage records the orders an answer placed, amended or cancelled; it
// never asks for a hold (krakenUsage does).
func (b *krakenBook) ParseUsage(a *middleware.Answer) ([]middleware.Usage, error) {
	if a.Request == nil || a.Request.URL == nil {
		return nil, nil
	}
	ep := strings.TrimPrefix(a.Request.URL.Path, "/0/private/")
	switch ep {
	case "AddOrder", "EditOrder", "AmendOrder", "CancelOrder", "AddOrderBatch", "CancelOrderBatch":
	default:
		return nil, nil
	}
	var v struct {
		Error  []string        `json:"error"`
		Result json.RawMessage `json:"result"`
	}
	if json.Unmarshal(a.Body, &v) != nil || len(v.Error) > 0 {
		return nil, nil // cut short, or refused: nothing changed
	}
	switch ep {
	case "AddOrder":
		var r struct {
			Txid []string `json:"txid"`
		}
		_ = json.Unmarshal(v.Result, &r)
		for _, id := range r.Txid {
			b.record(id)
		}
	case "EditOrder":
		// The edited order gets a new txid; the original is gone. An edit
		// this book cannot tie to a txid (by userref) forgets every order: a
		// stale placement time would make a later cancel look older, and
		// cheaper, than Kraken counts it.
		id := requestTxid(a.Request)
		if id == "" {
			b.reset()
			return nil, nil
		}
		var r struct {
			Txid string `json:"txid"`
			Orig string `json:"originaltxid"`
		}
		_ = json.Unmarshal(v.Result, &r)
		b.forget(id)
		b.forget(r.Orig)
		b.record(r.Txid)
	case "AmendOrder":
		// Amended in place: its age counts from now (by cl_ord_id: as for
		// an edit, forget every order).
		if id := requestTxid(a.Request); id != "" {
			b.record(id)
		} else {
			b.reset()
		}
	case "CancelOrder":
		b.forget(requestTxid(a.Request))
	case "AddOrderBatch":
		var r struct {
			Orders []struct {
				Txid string `json:"txid"`
			} `json:"orders"`
		}
		_ = json.Unmarshal(v.Result, &r)
		for _, o := range r.Orders {
			if o.Txid != "" {
				b.record(o.Txid)
			}
		}
	case "CancelOrderBatch":
		var req struct {
			Orders []json.RawMessage `json:"orders"`
		}
		_ = json.Unmarshal(requestBody(a.Request), &req)
		for _, o := range req.Orders {
			var txid string
			if json.Unmarshal(o, &txid) == nil {
				b.forget(txid)
			}
		}
	}
	return nil, nil
}

// requestTxid reads the txid of a sent request from its body, which the
// Transport made rewindable when it read it for Charges.
func requestTxid(r *http.Request) string {
	return bodyTxid(r.Header.Get("Content-Type"), requestBody(r))
}

// requestBody reads a sent request's body (nil if it cannot).
func requestBody(r *http.Request) []byte {
	if r.GetBody == nil {
		return nil
	}
	rc, err := r.GetBody()
	if err != nil {
		return nil
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, maxBody))
	if err != nil {
		return nil
	}
	return body
}

// bodyTxid reads "txid" from a form or JSON body.
func bodyTxid(contentType string, b []byte) string {
	if strings.HasPrefix(strings.TrimSpace(contentType), "application/json") {
		var v struct {
			Txid string `json:"txid"`
		}
		_ = json.Unmarshal(b, &v)
		return v.Txid
	}
	f, _ := url.ParseQuery(string(b))
	return f.Get("txid")
}
