# redquota: the commands a developer and CI run.
GO      ?= go
PKGS    ?= ./...
BENCH_COUNT ?= 6

.PHONY: test demo bench lint cover fuzz soak

## test: every test, race detector on, shuffled, on miniredis, a real redis-server and a 3-node cluster
test:
	$(GO) test -race -shuffle=on -count=1 $(PKGS)

## demo: the simulated exchange and worker fleet (embedded miniredis unless REDIS_URL is set)
demo:
	$(GO) run ./examples/demo

## bench: benchmarks against a redis-server they start themselves, written to BENCHMARKS.md
bench:
	./.ci/bench $(BENCH_COUNT)

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## cover: coverage profile and per-function summary
cover:
	$(GO) test -count=1 -coverprofile=cover.out $(PKGS)
	$(GO) tool cover -func=cover.out | tail -1
