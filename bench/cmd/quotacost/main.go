// Command quotacost counts redis-server's instructions per call of the
// 3-limit quota decision (AllowQuota(3): a fixed window, a sliding-window
// counter and a GCRA, as cmd/cgq and cmd/plain make it) phase by phase, with
// redis-server under callgrind: what the call itself costs, then reading the
// layout, the clock and the states, the grant time, the reply, the charge
// (three writes) and the rest. Issue 19 used it to show where a quota
// decision's instructions go against a plain Allow's.
//
//	cd bench && go run ./cmd/quotacost        # needs valgrind
//
// The phases are cuts of the decision script the limiter itself loaded: one
// real AllowQuota(3) loads redquota's function library and is recorded (its
// FCALL's keys and arguments, by a go-redis hook); the library's code is read
// back with FUNCTION LIST WITHCODE, and for each phase a copy whose decide
// function returns 1 at that phase's line is loaded under another name and
// called -n times with the recorded keys and arguments. Each row is the
// instructions per call (the idle server's over the same time subtracted);
// the difference between rows is what the phase costs. The cuts are found by
// the text of decide.lua's lines: if it changes, this command says which line
// it no longer finds.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"regexp"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/bench"
	"github.com/redquota/redquota/limiter"
)

// phases cut decide.lua's body before the line starting with cut ("" keeps
// the whole body), running instead before the return; what is the row's name.
var phases = []struct{ what, cut, instead string }{
	{"the FCALL alone (return 1): 5 keys, 22 arguments", "local Q, maxWait, now = quota_start(", ""},
	{"+ the layout: 3 limits' arguments read (quota_layout)", "local Q, maxWait, now = quota_start(", "local Q = quota_layout()\n"},
	{"+ the clock, MGET, every state parsed (quota_start)", "if Q.replay then", ""},
	{"+ the grant time (quota_time)", "if t - now > maxWait then", ""},
	{"+ the reply's table (quota_reply)", "quota_charge(Q, t, t, now, booking, out)", ""},
	{"+ the charge: 3 states written (quota_charge)", "local windowed = false", ""},
	{"the whole decision (decide.lua): + the reply sent", "", ""},
}

// recorder keeps the last FCALL a client sends.
type recorder struct{ args []any }

func (r *recorder) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *recorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (r *recorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); len(a) > 2 && strings.EqualFold(fmt.Sprint(a[0]), "fcall") {
			r.args = append([]any(nil), a...)
		}
		return next(ctx, cmd)
	}
}

func main() {
	n := flag.Int("n", 1000, "calls per phase")
	flag.Parse()
	cg, err := bench.StartCallgrind()
	if err != nil {
		log.Fatal(err)
	}
	defer cg.Close()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: cg.Addr(), MaxRetries: -1})
	defer c.Close()

	// One real decision: loads the library, and gives the call to replay.
	rec := &recorder{}
	lc := redis.NewClient(&redis.Options{Addr: cg.Addr(), MaxRetries: -1})
	lc.AddHook(rec)
	lim := limiter.New(lc, limiter.Options{Prefix: "qc", Timeout: time.Minute})
	q := limiter.Quota{Name: "q3", Limits: []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: 1e9, Period: time.Minute, Algorithm: limiter.FixedWindow}},
		{Name: "orders", Limit: limiter.Limit{Rate: 1e9, Period: 10 * time.Second, Algorithm: limiter.SlidingWindowCounter}},
		{Name: "daily", Limit: limiter.Limit{Rate: 1e9, Period: 24 * time.Hour, Burst: 1e9}},
	}}
	cost := limiter.Cost{"weight": 5, "orders": 1, "daily": 1}
	if r, err := lim.Allow(ctx, limiter.Charge{Quota: q, Cost: cost}); err != nil || !r.Allowed {
		log.Fatalf("AllowQuota(3): %v %v", r.Allowed, err)
	}
	_ = lc.Close()
	if rec.args == nil {
		log.Fatal("the decision sent no FCALL (a server without functions?)")
	}
	fn := fmt.Sprint(rec.args[1])
	if !strings.HasSuffix(fn, "_decide") {
		log.Fatalf("the decision called %s, not decide", fn)
	}
	nkeys := 0
	fmt.Sscan(fmt.Sprint(rec.args[2]), &nkeys)
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = fmt.Sprint(rec.args[3+i])
	}
	args := rec.args[3+nkeys:]
	fmt.Printf("recorded: FCALL %s, %d keys, %d arguments: %v\n", fn, nkeys, len(args), rec.args[3:])

	code := libraryCode(ctx, c, strings.TrimSuffix(fn, "_decide"))
	version := strings.TrimSuffix(strings.TrimPrefix(fn, "rq_"), "_decide")
	head := "redis.register_function('" + fn + "', function(keys, args)\nKEYS, ARGV = keys, args\n"
	start := strings.Index(code, head)
	if start < 0 {
		log.Fatalf("no %s in the library", fn)
	}
	start += len(head)
	end := strings.Index(code[start:], "\nend)\n")
	if end < 0 {
		log.Fatal("decide's body has no end")
	}
	body := code[start : start+end+1]

	var names []string
	for k, p := range phases {
		b := body
		if p.cut != "" {
			at := strings.Index(body, "\n"+p.cut)
			if at < 0 {
				log.Fatalf("decide.lua has no line starting %q: update this command's phases", p.cut)
			}
			b = body[:at+1] + p.instead + "do return 1 end\n"
		}
		tag := fmt.Sprintf("qc%d", k)
		lib := code[:start] + b + code[start+end+1:]
		lib = regexp.MustCompile(`(?m)^#!lua name=\S+`).ReplaceAllString(lib, "#!lua name=quotacost_"+tag)
		lib = strings.ReplaceAll(lib, "rq_"+version+"_", tag+"_")
		if err := c.FunctionLoadReplace(ctx, lib).Err(); err != nil {
			log.Fatalf("%s: %v", p.what, err)
		}
		name := tag + "_decide"
		if err := c.FCall(ctx, name, keys, args...).Err(); err != nil {
			log.Fatalf("%s: %v", p.what, err)
		}
		names = append(names, name)
	}

	idle, err := cg.IdleRate(2 * time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\n| phase | instructions per call | the phase |\n|---|---|---|\n")
	prev := 0.0
	for k, p := range phases {
		if _, err := cg.Dump(); err != nil {
			log.Fatal(err)
		}
		t0 := time.Now()
		for range *n {
			if err := c.FCall(ctx, names[k], keys, args...).Err(); err != nil {
				log.Fatalf("%s: %v", p.what, err)
			}
		}
		total, err := cg.Dump()
		if err != nil {
			log.Fatal(err)
		}
		per := (total - idle*time.Since(t0).Seconds()) / float64(*n)
		diff := ""
		if k > 0 {
			diff = fmt.Sprintf("+%.1fk", (per-prev)/1000)
		}
		fmt.Printf("| %s | %.1fk | %s |\n", p.what, per/1000, diff)
		prev = per
	}
}

// libraryCode returns the code of the function library whose functions start
// with prefix + "_".
func libraryCode(ctx context.Context, c *redis.Client, prefix string) string {
	libs, err := c.FunctionList(ctx, redis.FunctionListQuery{WithCode: true}).Result()
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range libs {
		for _, f := range l.Functions {
			if strings.HasPrefix(f.Name, prefix+"_") {
				return l.Code
			}
		}
	}
	log.Fatalf("no library with a function %s_…", prefix)
	return ""
}
