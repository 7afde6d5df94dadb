package prom_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/telemetry/prom"
)

// A limiter reporting to a Prometheus endpoint; the scrape shows its decisions.
func ExampleNew() {
	h, providers, err := prom.New()
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h) // in a program: http.ListenAndServe(":9464", mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	mr := miniredis.NewMiniRedis()
	_ = mr.Start()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	lim := limiter.New(rdb, limiter.Options{Telemetry: providers})
	for range 3 {
		_, _ = lim.Allow(context.Background(), limiter.Key("user:42", limiter.PerMinute(2)).Take(1))
	}

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "redquota_limiter_decisions_total{") {
			// Leave out the otel_scope_* labels every series carries.
			_, labels, _ := strings.Cut(line, "redquota_kind")
			labels, value, _ := strings.Cut(labels, "} ")
			fmt.Println("redquota_limiter_decisions_total{redquota_kind"+labels+"}", value)
		}
	}
	// Output:
	// redquota_limiter_decisions_total{redquota_kind="single",redquota_result="allowed"} 2
	// redquota_limiter_decisions_total{redquota_kind="single",redquota_result="denied"} 1
}
