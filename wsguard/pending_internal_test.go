package wsguard

import (
	"context"
	"strconv"
	"testing"

	"github.com/redquota/redquota/limiter"
)

// A connection remembers the charges of its latest maxPending requests, also
// when an id comes again after a refusal answered (and forgot) its first use:
// the older use must not take the newer one's charges with it when it ages
// out.
func TestPendingKeepsLatestRequests(t *testing.T) {
	g := &Guard{opts: Options{
		// A refusal naming a quota nothing was charged: no hold, no Redis.
		Refusals: func(s Signal) []Refusal { return []Refusal{{ID: string(s.Message), Quota: "none"}} },
		OnError:  func(error) {},
	}}
	c := &Conn{g: g, pending: map[string][]limiter.Charge{}}
	cs := []limiter.Charge{{Quota: limiter.Quota{Name: "q"}}}
	c.remember("x", cs)
	c.learn(context.Background(), Signal{Message: []byte("x")}) // answered: forgotten
	c.remember("x", cs)                                         // the id used again
	for i := range maxPending - 1 {
		c.remember(strconv.Itoa(i), cs)
	}
	if _, ok := c.pending["x"]; !ok {
		t.Fatalf("request x, one of the latest %d, was forgotten", maxPending)
	}
	c.remember("last", cs)
	if _, ok := c.pending["x"]; ok || len(c.pending) != maxPending {
		t.Fatalf("pending holds %d requests (x: %v), want the latest %d without x", len(c.pending), ok, maxPending)
	}
}
