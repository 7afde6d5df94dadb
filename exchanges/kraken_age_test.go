package exchanges

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/middleware"
)

// The costs by age are Kraken's table ("Spot Trading Limits", checked
// 2026-12-06), each step's boundary belonging to the older step.
func TestKrakenAgeCost(t *testing.T) {
	for _, tc := range []struct {
		ep   string
		age  time.Duration
		want int
	}{
		{"CancelOrder", 0, 8}, {"CancelOrder", 4999 * time.Millisecond, 8}, {"CancelOrder", 5 * time.Second, 6},
		{"CancelOrder", 14 * time.Second, 5}, {"CancelOrder", 44 * time.Second, 4}, {"CancelOrder", 89 * time.Second, 2},
		{"CancelOrder", 299 * time.Second, 1}, {"CancelOrder", 300 * time.Second, 0},
		{"EditOrder", 0, 7}, {"EditOrder", 12 * time.Second, 5}, {"EditOrder", 60 * time.Second, 2}, {"EditOrder", time.Hour, 1},
		{"AmendOrder", 0, 4}, {"AmendOrder", 9 * time.Second, 3}, {"AmendOrder", 14 * time.Second, 2}, {"AmendOrder", 15 * time.Second, 1},
	} {
		assert.Equal(t, tc.want, krakenAgeCost(tc.ep, tc.age, 1), "%s at %v", tc.ep, tc.age)
	}
	assert.Equal(t, 6, krakenAgeCost("CancelOrder", 600*time.Millisecond, 0.1), "scaled: 0.6 s is 6 s")
}

// answer is a Kraken answer to a form request to endpoint with body.
func krakenAnswer(t *testing.T, endpoint, form, reply string) *middleware.Answer {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, "https://api.kraken.com/0/private/"+endpoint, strings.NewReader(form))
	require.NoError(t, err)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return &middleware.Answer{Request: r, StatusCode: 200, Body: []byte(reply)}
}

// The book learns placements from answers, forgets what an edit or cancel
// ended, forgets everything on an edit it cannot tie to a txid (a stale time
// would under-charge), ignores refused calls, and stays bounded.
func TestKrakenBook(t *testing.T) {
	b := newKrakenBook()
	at := time.Unix(1000, 0)
	b.now = func() time.Time { return at }
	parse := func(ep, form, reply string) {
		_, err := b.ParseUsage(krakenAnswer(t, ep, form, reply))
		require.NoError(t, err)
	}
	parse("AddOrder", "pair=XBTUSD", `{"error":[],"result":{"txid":["A"]}}`)
	parse("AddOrder", "pair=XBTUSD", `{"error":["EOrder:Rate limit exceeded"]}`)
	at = at.Add(20 * time.Second)
	age, ok := b.age("A")
	require.True(t, ok)
	assert.Equal(t, 20*time.Second, age)

	parse("AmendOrder", "txid=A", `{"error":[],"result":{"amend_id":"x"}}`)
	age, _ = b.age("A")
	assert.Zero(t, age, "an amend restarts the age")

	parse("EditOrder", "txid=A", `{"error":[],"result":{"txid":"B","originaltxid":"A"}}`)
	_, okA := b.age("A")
	_, okB := b.age("B")
	assert.False(t, okA)
	assert.True(t, okB)

	parse("EditOrder", "userref=7", `{"error":[],"result":{"txid":"C"}}`)
	_, okB = b.age("B")
	assert.False(t, okB, "an edit by userref forgets every order")

	parse("AddOrder", "pair=XBTUSD", `{"error":[],"result":{"txid":["D"]}}`)
	parse("CancelOrder", "txid=D", `{"error":[],"result":{"count":1}}`)
	_, ok = b.age("D")
	assert.False(t, ok)

	for i := range krakenBookMax + 10 {
		b.record(fmt.Sprint("O", i))
	}
	assert.Len(t, b.placed, krakenBookMax)
	_, ok = b.age("O0")
	assert.False(t, ok, "the oldest is forgotten first")
	for i := range 3 * krakenBookMax {
		id := fmt.Sprint("P", i)
		b.record(id)
		b.forget(id)
	}
	assert.LessOrEqual(t, len(b.order), 2*krakenBookMax+1, "placed and cancelled all day, the book stays bounded")
}

// A batch add is charged half its orders, rounded up; a batch cancel what
// its orders would cost one by one, as of their ages when this preset saw
// them placed (by AddOrderBatch too); both at most the counter's maximum; a
// body it cannot read, the maximum.
func TestKrakenBatchCost(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	b := newKrakenBook()
	b.now = func() time.Time { return now }
	opts := KrakenOptions{CancelCost: 8}
	placed := krakenAnswer(t, "AddOrderBatch", "", `{"error":[],"result":{"orders":[{"txid":"A"},{"txid":"B"}]}}`)
	_, err := b.ParseUsage(placed)
	require.NoError(t, err)
	now = now.Add(20 * time.Second) // A and B rest 20 s: a cancel adds 4 each
	add := `{"pair":"XBTUSD","orders":[{"ordertype":"limit"},{"ordertype":"limit"},{"ordertype":"limit"}]}`
	assert.Equal(t, 2, krakenBatchCost("AddOrderBatch", "application/json", []byte(add), b, opts, 60), "3 orders: +1.5, rounded up")
	add2 := `{"pair":"XBTUSD","orders":[{"ordertype":"limit"},{"ordertype":"limit"}]}`
	assert.Equal(t, 1, krakenBatchCost("AddOrderBatch", "application/json", []byte(add2), b, opts, 60), "2 orders: +1")
	cancel := `{"orders":["A","B",1234,"UNKNOWN"],"cl_ord_ids":["c-1"]}`
	assert.Equal(t, 4+4+8+8+8, krakenBatchCost("CancelOrderBatch", "application/json", []byte(cancel), b, opts, 60),
		"by age where known, else the most")
	assert.Equal(t, 20, krakenBatchCost("CancelOrderBatch", "application/json", []byte(cancel), b, opts, 20), "at most the counter's maximum")
	assert.Equal(t, 60, krakenBatchCost("AddOrderBatch", "application/x-www-form-urlencoded", []byte("orders=1"), b, opts, 60), "unreadable: the maximum")
	assert.Equal(t, 60, krakenBatchCost("CancelOrderBatch", "application/json", []byte(`{}`), b, opts, 60), "no orders: the maximum")
	// A cancelled batch's orders are forgotten.
	r, err := http.NewRequest(http.MethodPost, "https://api.kraken.com/0/private/CancelOrderBatch", strings.NewReader(`{"orders":["A"]}`))
	require.NoError(t, err)
	r.Header.Set("Content-Type", "application/json")
	_, err = b.ParseUsage(&middleware.Answer{Request: r, StatusCode: 200, Body: []byte(`{"error":[],"result":{"count":1}}`)})
	require.NoError(t, err)
	_, ok := b.age("A")
	assert.False(t, ok, "A cancelled")
	_, ok = b.age("B")
	assert.True(t, ok, "B still rests")
}
