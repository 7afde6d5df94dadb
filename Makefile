# redquota: the commands a developer and CI run.
GO      ?= go
PKGS    ?= ./...
BENCH_COUNT ?= 6

.PHONY: test demo bench bench-plain lint cover fuzz soak chaos monitoring-check monitoring-demo api

## test: every test, race detector on, shuffled, on miniredis, a real redis-server and a 3-node cluster
test:
	$(GO) test -race -shuffle=on -count=1 $(PKGS)

## demo: the simulated exchange and worker fleet (embedded miniredis unless REDIS_URL is set)
demo:
	$(GO) run ./examples/demo

## bench: benchmarks against a redis-server they start themselves, written to BENCHMARKS.md
bench:
	./.ci/bench $(BENCH_COUNT)

## bench-plain: issue 19's table, plain Allow against redis_rate v10 and PING (default and no-retry client, hot key and 10 000 keys): wall-clock and allocations, then server instructions under callgrind (apt-get install -y valgrind), into BENCHMARKS.md
bench-plain:
	cd bench && $(GO) run ./cmd/plain -md ../BENCHMARKS.md
	cd bench && $(GO) run ./cmd/plain -callgrind -md ../BENCHMARKS.md

## lint: formatting, vet, and a doc comment on every exported name
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@out=$$($(GO) run ./internal/apicount -undoc | grep '^undocumented'); if [ -n "$$out" ]; then echo "$$out"; exit 1; fi

## cover: coverage profile and per-function summary
cover:
	$(GO) test -count=1 -coverprofile=cover.out $(PKGS)
	$(GO) tool cover -func=cover.out | tail -1

## soak: 60 s, 8 OS processes × 64 goroutines, 20 quotas; checks every limit from the grant logs (not part of test)
soak:
	REDQUOTA_SOAK=1 $(GO) test -run '^TestSoak$$' -count=1 -timeout 10m -v ./limiter/

## chaos: the soak through Sentinel while faults run (kill -9, SCRIPT FLUSH, CLIENT KILL, DEBUG SLEEP, maxmemory, failover); checks limits, recovery within 1 s, no leaked goroutine (not part of test)
chaos:
	REDQUOTA_CHAOS=1 $(GO) test -run '^TestChaos$$' -count=1 -timeout 10m -v ./limiter/

## fuzz: each fuzz target for FUZZTIME (default 10s); their seed corpora also run in make test
FUZZTIME ?= 10s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzEscape$$' -fuzztime $(FUZZTIME) ./internal/keys/
	$(GO) test -run '^$$' -fuzz '^FuzzLimitValidate$$' -fuzztime $(FUZZTIME) ./limiter/
	$(GO) test -run '^$$' -fuzz '^FuzzParseReply$$' -fuzztime $(FUZZTIME) ./limiter/
	$(GO) test -run '^$$' -fuzz '^FuzzParseBatch$$' -fuzztime $(FUZZTIME) ./limiter/
	$(GO) test -run '^$$' -fuzz '^FuzzParseRetryAfter$$' -fuzztime $(FUZZTIME) ./middleware/
	$(GO) test -run '^$$' -fuzz '^FuzzUsageHeaders$$' -fuzztime $(FUZZTIME) ./middleware/
	$(GO) test -run '^$$' -fuzz '^FuzzCodecDecode$$' -fuzztime $(FUZZTIME) ./cache/

## monitoring-check: promtool (apt-get install -y prometheus) checks the rules, runs their tests and lints a live scrape; the dashboard's queries are checked against TELEMETRY_NAMES.md
monitoring-check:
	promtool check rules monitoring/prometheus/rules.yml
	cd monitoring/prometheus && promtool test rules rules_test.yml
	promtool check config monitoring/prometheus/prometheus.yml
	REDQUOTA_REQUIRE_PROMTOOL=1 $(GO) test -count=1 ./telemetry/prom/

## monitoring-demo: the demo with -metrics, a real Prometheus scraping it every 2 s, and every dashboard query asked of it (DURATION=40s)
monitoring-demo:
	./monitoring/demo.sh

## api: exported names and fields per public package (the surface issue 18 shrinks)
api:
	$(GO) run ./internal/apicount
