// Package bench compares redquota with the libraries its users would pick
// instead — go-redis/redis_rate v10, ulule/limiter v3 (redis store),
// throttled v2 (go-redis v9 store) — and with the floors under them: a
// go-redis PING, a GET and an EVALSHA of a trivial script on the same Redis,
// and golang.org/x/time/rate in process as the ceiling.
//
// It is a module of its own so that the main module never depends on its
// peers. The benchmarks (compare_test.go) start their own redis-server; the
// tail-latency run is cmd/tail; cmd/benchreport writes BENCHMARKS.md from
// their output. `make bench` at the repository root runs all of it (.ci/bench).
package bench
