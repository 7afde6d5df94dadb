package middleware_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// A request no rule matches is counted in Stats.Unmatched and sent; on a
// Strict Transport it fails, typed and unsent, its body closed.
func TestStrictAndUnmatched(t *testing.T) {
	_, lim := miniLimiter(t)
	srv := newServer(t, func(http.ResponseWriter, *http.Request) {})
	rule := middleware.Rule{Hosts: []string{"api.binance.com"}, Quota: exQuota, Cost: weight1}
	tr := newTransport(t, nil, lim, middleware.Options{}, rule)
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := tr.Stats(); s.Unmatched != 1 || s.Sent != 0 || srv.hits.Load() != 1 {
		t.Fatalf("stats %+v, hits %d", s, srv.hits.Load())
	}
	strict := newTransport(t, nil, lim, middleware.Options{Strict: true}, rule)
	body := &closeTracker{}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/x?signature=secret", body)
	_, err = strict.RoundTrip(req)
	if !errors.Is(err, middleware.ErrInvalid) || strings.Contains(err.Error(), "secret") {
		t.Fatalf("strict: %v", err)
	}
	if s := strict.Stats(); s.Unmatched != 1 || srv.hits.Load() != 1 || !body.closed.Load() {
		t.Fatalf("strict: stats %+v, hits %d, body closed %v", s, srv.hits.Load(), body.closed.Load())
	}
}

// A host with a port is matched on that port (the test server's), and an
// entry that is not a host is an invalid rule, never one silently ignored.
func TestHostsWithPort(t *testing.T) {
	_, lim := miniLimiter(t)
	srv := newServer(t, func(http.ResponseWriter, *http.Request) {})
	u, _ := url.Parse(srv.URL)
	tr := newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Hosts: []string{"example.com", u.Host}, Quota: exQuota, Cost: weight1})
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := tr.Stats(); s.Sent != 1 || s.Unmatched != 0 {
		t.Fatalf("stats %+v", s)
	}
	other := newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Hosts: []string{u.Hostname() + ":1"}, Quota: exQuota, Cost: weight1})
	resp, err = (&http.Client{Transport: other}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := other.Stats(); s.Sent != 0 || s.Unmatched != 1 {
		t.Fatalf("another port: stats %+v", s)
	}
	for _, h := range []string{"http://a.com", "a.com/x", "a.com:0"} {
		if _, err := middleware.NewTransport(nil, lim, middleware.Options{}, middleware.Rule{Hosts: []string{h}, Quota: exQuota, Cost: weight1}); !errors.Is(err, middleware.ErrInvalid) {
			t.Errorf("host %q: %v", h, err)
		}
	}
}

// Charges sees a copy of the request's body, also one without GetBody, and
// the server gets the body whole; the usage parsers see the answer's status,
// header and the first PeekBody bytes of its body before the caller reads it,
// and the caller still reads all of it. StripHeaders never reach the server,
// and Charges still sees them.
func TestChargesAndAnswerHooks(t *testing.T) {
	_, lim := miniLimiter(t)
	const answer = `{"error":["EAPI:Rate limit exceeded"],"result":"long enough to be cut"}`
	var mu sync.Mutex
	var got []string // what the server received, in order
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, string(b)+"|"+r.Header.Get("X-Hint"))
		mu.Unlock()
		w.Header().Set("X-Left", "0")
		_, _ = io.WriteString(w, answer)
	})
	var seenBody, seenHint string
	var peeked []byte
	var caller bool // set when the caller has read the answer
	tr := newTransport(t, nil, lim, middleware.Options{StripHeaders: []string{"x-hint"}}, middleware.Rule{
		Charges: func(r *http.Request, body []byte) ([]limiter.Charge, error) {
			seenBody, seenHint = string(body), r.Header.Get("X-Hint")
			return []limiter.Charge{{Quota: exQuota, Cost: limiter.Cost{"weight": len(body)}}}, nil
		},
		PeekBody: 10,
		Usage: []middleware.UsageParser{{Parse: func(a *middleware.Answer) ([]middleware.Usage, error) {
			if caller {
				t.Error("the parser ran after the caller read the answer")
			}
			peeked = a.Body
			if a.StatusCode != http.StatusOK || a.Header.Get("X-Left") != "0" || len(a.Charges) != 1 {
				t.Errorf("answer %+v", a)
			}
			return nil, nil
		}}},
	})
	const sent = "symbol=BTCUSDT&qty=1"
	req, _ := http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(strings.NewReader(sent))) // no GetBody
	req.Header.Set("X-Hint", "pair")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	caller = true
	resp.Body.Close()
	if string(b) != answer || string(peeked) != answer[:10] {
		t.Errorf("caller read %q, parser peeked %q", b, peeked)
	}
	if seenBody != sent || seenHint != "pair" || len(got) != 1 || got[0] != sent+"|" {
		t.Errorf("Charges saw %q (hint %q); the server got %q", seenBody, seenHint, got)
	}
	if res := weightLeft(t, lim); res.Limits[0].Remaining != 100-len(sent)-1 {
		t.Errorf("charged %d weight, want %d", 100-res.Limits[0].Remaining-1, len(sent))
	}
	// A body longer than 64 KiB is cut for Charges and sent whole.
	long := bytes.Repeat([]byte("x"), 64<<10+100)
	var cut int
	tr = newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Charges: func(_ *http.Request, body []byte) ([]limiter.Charge, error) {
		cut = len(body)
		return []limiter.Charge{{Quota: exQuota, Cost: weight1}}, nil
	}})
	req, _ = http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(bytes.NewReader(long)))
	resp, err = (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cut != 64<<10+1 || len(got) != 2 || len(got[1]) != len(long)+1 {
		t.Errorf("Charges saw %d bytes, want maxBody+1; server got %d, want %d", cut, len(got[1])-1, len(long))
	}
}
