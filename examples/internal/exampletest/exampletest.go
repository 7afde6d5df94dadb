// Package exampletest runs an example's run function, in its own test, on
// each kind of Redis the examples support: the embedded miniredis, a real
// redis-server and a three-master cluster, the last two started by
// internal/redistest and handed to the example through REDIS_URL.
package exampletest

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redquota/redquota/examples/internal/exampleenv"
	"github.com/redquota/redquota/internal/redistest"
)

// Backend names a Redis to run an example on.
type Backend = redistest.Kind

// The backends: Mini needs nothing; Real and Cluster need redis-server and
// skip without it (or fail with REDQUOTA_REQUIRE_REDIS=1).
const (
	Mini    = redistest.Mini
	Real    = redistest.Real
	Cluster = redistest.Cluster
)

// RunFunc is the signature every example's run has.
type RunFunc func(ctx context.Context, args []string, stdout io.Writer) error

// Each runs run with args as one subtest per backend, with REDIS_URL set for
// it, and passes the output to check. A run that returns an error fails the
// subtest, its output logged. It calls t.Setenv, so its tests cannot be
// parallel.
func Each(t *testing.T, backends []Backend, run RunFunc, args []string, check func(t *testing.T, out string)) {
	t.Helper()
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			t.Setenv(exampleenv.URLEnv, url(t, b))
			// Many processes' calls at once on a loaded machine under -race
			// can hold a read past the default 1 s socket timeout (seen: the
			// in-process miniredis, 30 WebSocket dials), and the limiter then
			// fails closed. The examples' checks are limits, holds and
			// counts, not latency.
			t.Setenv("REDIS_SOCKET_TIMEOUT", "10")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out bytes.Buffer
			if err := run(ctx, args, &out); err != nil {
				t.Fatalf("run %v: %v\noutput:\n%s", args, err, out.String())
			}
			check(t, out.String())
			if t.Failed() {
				t.Logf("output:\n%s", out.String())
			}
		})
	}
}

func url(t *testing.T, b Backend) string {
	t.Helper()
	switch b {
	case Real:
		return "redis://" + redistest.Shared(t).Addr()
	case Cluster:
		var urls []string
		for _, s := range redistest.SharedCluster(t) {
			urls = append(urls, "redis://"+s.Addr())
		}
		return strings.Join(urls, ",")
	}
	return ""
}

// Line returns the first line of out that starts with prefix (ignoring leading
// spaces), and whether there was one.
func Line(out, prefix string) (string, bool) {
	for l := range strings.Lines(out) {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, prefix) {
			return t, true
		}
	}
	return "", false
}

// Scrape runs run on the embedded miniredis with args and -metrics on a free
// loopback port, and scrapes that port every 200 ms while it runs until one
// scrape holds every string of want; it fails the test when run ends first,
// or fails.
func Scrape(t *testing.T, run RunFunc, args []string, want ...string) {
	t.Helper()
	t.Setenv(exampleenv.URLEnv, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, append(args, "-metrics", addr), io.Discard) }()
	var last string
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			t.Fatalf("the example ended and no scrape while it ran had all of %q; last scrape:\n%s", want, last)
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			continue // not listening yet
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		last = string(b)
		if !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(last, w) }) {
			break
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
