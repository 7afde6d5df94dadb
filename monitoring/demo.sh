#!/usr/bin/env bash
# make monitoring-demo: run the demo with -metrics, a real Prometheus (Debian's
# prometheus package) scraping it every 2 s with rules.yml loaded, then ask
# Prometheus every query of the Grafana dashboard and print what comes back.
# Exits non-zero when Prometheus cannot scrape the demo, or when the cache hit
# rate, requests per quota or decisions queries return no data.
#
# Variables: DURATION (demo length, default 40s), METRICS_ADDR (127.0.0.1:9464),
# PROM_ADDR (127.0.0.1:9090). Needs go, prometheus, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-40s}
METRICS_ADDR=${METRICS_ADDR:-127.0.0.1:9464}
PROM_ADDR=${PROM_ADDR:-127.0.0.1:9090}
for c in prometheus curl python3; do
  command -v "$c" >/dev/null || { echo "monitoring-demo: $c not found (apt-get install -y prometheus curl python3)" >&2; exit 2; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/demo" ./examples/demo
cp monitoring/prometheus/rules.yml "$tmp/"
sed "s/127.0.0.1:9464/$METRICS_ADDR/" monitoring/prometheus/prometheus.yml >"$tmp/prometheus.yml"

"$tmp/demo" -duration "$DURATION" -metrics "$METRICS_ADDR" >"$tmp/demo.out" 2>&1 &
pids+=($!)
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="$PROM_ADDR" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
pids+=($!)

# The demo warms up, then runs a third of its time without the cache and the
# rest with it. Ask the saturation and hit-rate panels near the end of the
# first phase, then everything well into the second.
secs=${DURATION%s}
ask() { # title, query: print each series and its value
  curl -fsS "http://$PROM_ADDR/api/v1/query" --data-urlencode "query=$2" | python3 -c '
import json, sys
res = json.load(sys.stdin)["data"]["result"]
print("%-40s %s" % (sys.argv[1], ", ".join("%s=%.3f" % (",".join(r["metric"].values()) or "all", float(r["value"][1])) for r in res) or "no data"))
' "$1"
}
sleep $(( secs / 3 ))
echo "== near the end of the demo's phase without the cache ($(( secs / 3 )) s in)"
ask "share that waited > 100 ms" '1 - (sum by (redquota_quota) (rate(redquota_middleware_wait_seconds_bucket{le="0.1"}[10s])) / sum by (redquota_quota) (rate(redquota_middleware_wait_seconds_count[10s])))'
ask "wait p99, seconds" 'histogram_quantile(0.99, sum by (le, redquota_quota) (rate(redquota_middleware_wait_seconds_bucket[10s])))'
ask "cache hit rate" 'sum(rate(redquota_cache_requests_total{redquota_result="hit"}[10s])) / sum(rate(redquota_cache_requests_total{redquota_result=~"hit|miss"}[10s]))'
echo
sleep $(( secs * 3 / 4 - secs / 3 ))

echo "== Prometheus $(prometheus --version 2>&1 | head -1 | cut -d' ' -f3) at http://$PROM_ADDR, scraping the demo at http://$METRICS_ADDR/metrics every 2 s"
curl -fsS "http://$PROM_ADDR/api/v1/targets" | python3 -c '
import json, sys
for t in json.load(sys.stdin)["data"]["activeTargets"]:
    print("target", t["scrapeUrl"], "health", t["health"], "last scrape", t["lastScrape"][:19], t["lastError"])
    if t["health"] != "up":
        sys.exit("monitoring-demo: Prometheus cannot scrape the demo")
'
curl -fsS "http://$PROM_ADDR/api/v1/query" --data-urlencode 'query=count_over_time(up{job="demo"}[5m])' | python3 -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    print("scrapes so far:", r["value"][1])
'
echo
echo "== every query of monitoring/grafana/dashboards/redquota.json (\$job = .*, \$__rate_interval = 10s)"
PROM_ADDR=$PROM_ADDR python3 - <<'PY'
import json, os, sys, urllib.parse, urllib.request
addr = os.environ["PROM_ADDR"]
dash = json.load(open("monitoring/grafana/dashboards/redquota.json"))
must = {"Requests per quota, by answer", "Cache hit rate", "Limiter decisions by result"}
missing = []
for p in dash["panels"]:
    for t in p.get("targets", []):
        q = t["expr"].replace('job=~"$job"', 'job=~".*"').replace("$__rate_interval", "10s")
        url = "http://%s/api/v1/query?%s" % (addr, urllib.parse.urlencode({"query": q}))
        res = json.load(urllib.request.urlopen(url))["data"]["result"]
        print("%-62s %-24s %d series" % (p["title"][:62], t.get("legendFormat", "")[:24], len(res)))
        for r in res[:4]:
            labels = ",".join("%s=%s" % kv for kv in sorted(r["metric"].items()))
            print("      {%s} %s" % (labels, r["value"][1]))
        if p["title"] in must and not res:
            missing.append(p["title"])
if missing:
    sys.exit("monitoring-demo: no data for %s" % missing)
PY
echo
echo "== rules loaded"
curl -fsS "http://$PROM_ADDR/api/v1/rules" | python3 -c '
import json, sys
for g in json.load(sys.stdin)["data"]["groups"]:
    for r in g["rules"]:
        print("%-45s %-10s %s" % (r["name"], r["health"], r.get("state", "")))
'
wait "${pids[0]}" || { echo "monitoring-demo: the demo failed:"; tail -20 "$tmp/demo.out"; exit 1; }
echo
echo "== the demo's own summary"
tail -22 "$tmp/demo.out"
