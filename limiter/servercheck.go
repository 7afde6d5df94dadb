package limiter

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ServerCheck is one finding of CheckServer about the Redis a limiter uses.
type ServerCheck struct {
	// Name is what was checked: "version", "eviction", "persistence",
	// "cluster" or "acl".
	Name string
	// Level is "pass", "warn" (limits hold, with a caveat) or "fail" (the
	// limiter cannot work, or limits can overshoot).
	Level string
	// Detail says what was found; Advice what to do about it ("" on pass).
	Detail, Advice string
}

// Check levels, worst last.
const (
	levelPass = "pass"
	levelWarn = "warn"
	levelFail = "fail"
)

func worse(a, b string) bool {
	rank := map[string]int{levelPass: 0, levelWarn: 1, levelFail: 2}
	return rank[a] > rank[b]
}

// infoClient is a client that runs INFO.
type infoClient interface {
	Info(ctx context.Context, section ...string) *redis.StringCmd
}

// checkConn is one server connection the checks use.
type checkConn interface {
	infoClient
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// CheckServer inspects the Redis a limiter uses, on every master of a
// cluster, and reports what can make a limit overshoot or the limiter fail;
// call it at start-up and log what it returns. It checks the server's version
// (scripts replicated by effect need Redis 5, and redquota is tested on 6.2
// and later); eviction (with maxmemory set, every policy but noeviction may
// delete keys under memory pressure, volatile-* policies included since
// every redquota key has a TTL, and a limiter key that vanishes forgets what
// was already granted; under noeviction writes fail when memory is full and
// the failure policy decides instead); persistence (a restart without it
// forgets every count, and the holds no process remembers); the cluster's state; and whether the
// client's user may read, write, script and SCAN keys under prefix ("" is
// the default "rq"; a probe key under prefix, with a 10 s TTL, is written
// and deleted), and call and load Redis functions (without them decisions
// cost Redis more: a warning). A check that could not run is a warning naming why. c is a
// go-redis client (Client, ClusterClient, Ring...); the error is for another
// client, or a server that cannot be reached at all.
func CheckServer(ctx context.Context, c Client, prefix string) ([]ServerCheck, error) {
	if prefix == "" {
		prefix = "rq"
	}
	var nodes []checkConn
	var addrs []string
	clusterClient := false
	if mi, ok := c.(masterIterator); ok {
		clusterClient = true
		var mu sync.Mutex // ForEachMaster calls fn concurrently
		err := mi.ForEachMaster(ctx, func(_ context.Context, m *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			nodes = append(nodes, m)
			addrs = append(addrs, m.Options().Addr)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("limiter: cluster masters: %w", err)
		}
		// In address order, so a finding names the same node every run.
		sort.Sort(byAddr{nodes, addrs})
	} else if cc, ok := c.(checkConn); ok {
		nodes, addrs = []checkConn{cc}, []string{""}
	} else {
		return nil, fmt.Errorf("limiter: CheckServer needs a go-redis client")
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("limiter: no master to check")
	}
	// A master that does not answer is the finding of the "cluster" check,
	// and the other checks run on the masters that do: they would otherwise
	// each report "could not check" with advice about rights.
	total := len(nodes)
	var down []string
	var downErr error
	up, upAddrs := nodes[:0:0], addrs[:0:0]
	for i, n := range nodes {
		if err := n.Do(ctx, "ping").Err(); err != nil {
			down = append(down, addrs[i])
			if downErr == nil {
				downErr = err
			}
			continue
		}
		up, upAddrs = append(up, n), append(upAddrs, addrs[i])
	}
	if len(up) == 0 {
		return nil, fmt.Errorf("limiter: PING: %w", downErr)
	}
	nodes, addrs = up, upAddrs
	type checkFn func(ctx context.Context, n checkConn) ServerCheck
	checks := []checkFn{
		checkVersion,
		checkEviction,
		checkPersistence,
		func(ctx context.Context, n checkConn) ServerCheck { return checkCluster(ctx, n, clusterClient) },
	}
	out := make([]ServerCheck, 0, len(checks))
	for _, fn := range checks {
		// One line per check: the masters' common finding, or the worst one,
		// naming its node.
		rs := make([]ServerCheck, len(nodes))
		worst, same := 0, true
		for i, n := range nodes {
			rs[i] = fn(ctx, n)
			same = same && rs[i] == rs[0]
			if worse(rs[i].Level, rs[worst].Level) {
				worst = i
			}
		}
		got := rs[worst]
		switch {
		case len(down) > 0 && got.Name == "cluster":
			got = ServerCheck{Name: "cluster", Level: levelFail,
				Detail: fmt.Sprintf("%d of %d masters do not answer (%s): %v", len(down), total, strings.Join(down, ", "), downErr),
				Advice: "decisions on their slots fail under the failure policy until they, or replicas promoted in their place, answer: check CLUSTER NODES"}
		case len(down) > 0 && same:
			got.Detail += fmt.Sprintf(" (all %d masters that answer)", len(nodes))
		case len(nodes) > 1 && same:
			got.Detail += fmt.Sprintf(" (all %d masters)", len(nodes))
		case len(nodes) > 1 || len(down) > 0:
			got.Detail = addrs[worst] + ": " + got.Detail
		}
		out = append(out, got)
	}
	// Rights are the user's, not a node's: probed once, through the client
	// (a cluster client routes the probe key to its slot).
	if cc, ok := c.(checkConn); ok {
		out = append(out, checkACL(ctx, cc, prefix))
	}
	return out, nil
}

type byAddr struct {
	nodes []checkConn
	addrs []string
}

func (b byAddr) Len() int           { return len(b.addrs) }
func (b byAddr) Less(i, j int) bool { return b.addrs[i] < b.addrs[j] }
func (b byAddr) Swap(i, j int) {
	b.nodes[i], b.nodes[j] = b.nodes[j], b.nodes[i]
	b.addrs[i], b.addrs[j] = b.addrs[j], b.addrs[i]
}

// infoFields runs INFO section and returns its fields.
func infoFields(ctx context.Context, c infoClient, section string) (map[string]string, error) {
	info, err := c.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	return fields, nil
}

func cannot(name string, err error) ServerCheck {
	return ServerCheck{Name: name, Level: levelWarn, Detail: "could not check: " + err.Error(),
		Advice: "run the check as a user allowed INFO and CONFIG GET, or check by hand"}
}

func checkVersion(ctx context.Context, n checkConn) ServerCheck {
	f, err := infoFields(ctx, n, "server")
	if err != nil {
		return cannot("version", err)
	}
	v := f["redis_version"]
	parts := strings.SplitN(v, ".", 3)
	major, err1 := strconv.Atoi(parts[0])
	minor := 0
	if len(parts) > 1 {
		minor, _ = strconv.Atoi(parts[1])
	}
	switch {
	case v == "" || err1 != nil:
		return ServerCheck{Name: "version", Level: levelWarn, Detail: "server reports no redis_version",
			Advice: "redquota needs Redis 5 or later (tested on 6.2+); check the server by hand"}
	case major < 5:
		return ServerCheck{Name: "version", Level: levelFail, Detail: "Redis " + v,
			Advice: "upgrade to Redis 6.2 or later: scripts that read TIME need effect replication (Redis 5+)"}
	case major < 6 || major == 6 && minor < 2:
		return ServerCheck{Name: "version", Level: levelWarn, Detail: "Redis " + v,
			Advice: "redquota is tested on Redis 6.2 and later; upgrade when you can"}
	}
	return ServerCheck{Name: "version", Level: levelPass, Detail: "Redis " + v}
}

func checkEviction(ctx context.Context, n checkConn) ServerCheck {
	w, err := evictionWarnings(ctx, n)
	if err != nil {
		return cannot("eviction", err)
	}
	if len(w) > 0 {
		return ServerCheck{Name: "eviction", Level: levelWarn, Detail: w[0],
			Advice: "CONFIG SET maxmemory-policy noeviction, or keep limits in a Redis of their own"}
	}
	f, _ := infoFields(ctx, n, "memory")
	return ServerCheck{Name: "eviction", Level: levelPass, Detail: "maxmemory-policy " + f["maxmemory_policy"] + ": limiter keys are never evicted"}
}

func checkPersistence(ctx context.Context, n checkConn) ServerCheck {
	f, err := infoFields(ctx, n, "persistence")
	if err != nil {
		return cannot("persistence", err)
	}
	if f["aof_enabled"] == "1" {
		return ServerCheck{Name: "persistence", Level: levelPass, Detail: "append-only file on: a restart keeps counts and holds"}
	}
	v, err := n.Do(ctx, "config", "get", "save").Result()
	if err != nil {
		return cannot("persistence", err)
	}
	save := map[string]string{}
	switch v := v.(type) {
	case []any: // RESP2: name, value, …
		for i := 0; i+1 < len(v); i += 2 {
			k, _ := v[i].(string)
			s, _ := v[i+1].(string)
			save[k] = s
		}
	case map[any]any: // RESP3
		for k, x := range v {
			ks, _ := k.(string)
			s, _ := x.(string)
			save[ks] = s
		}
	}
	advice := "fine for per-second limits; for hourly or daily quotas (orders per day) use appendonly yes with appendfsync everysec"
	if s := save["save"]; s != "" {
		return ServerCheck{Name: "persistence", Level: levelWarn,
			Detail: "RDB snapshots only (save " + s + "): a restart forgets what was granted since the last snapshot", Advice: advice}
	}
	return ServerCheck{Name: "persistence", Level: levelWarn,
		Detail: "none: a restart forgets every count, so every limit starts full again, and every hold no process remembers", Advice: advice}
}

func checkCluster(ctx context.Context, n checkConn, clusterClient bool) ServerCheck {
	f, err := infoFields(ctx, n, "cluster")
	if err != nil {
		return cannot("cluster", err)
	}
	if f["cluster_enabled"] != "1" {
		return ServerCheck{Name: "cluster", Level: levelPass, Detail: "standalone server (not a cluster)"}
	}
	if !clusterClient {
		return ServerCheck{Name: "cluster", Level: levelFail, Detail: "the server is a cluster node but the client is not a cluster client",
			Advice: "set REDIS_CLUSTER=1 or list every node in REDIS_URL, so keys are routed to their slots"}
	}
	ci, err := n.Do(ctx, "cluster", "info").Text()
	if err != nil {
		return cannot("cluster", err)
	}
	state := ""
	for _, line := range strings.Split(ci, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cluster_state:"); ok {
			state = v
		}
	}
	if state != "ok" {
		return ServerCheck{Name: "cluster", Level: levelFail, Detail: "cluster_state:" + state,
			Advice: "every slot must be served: check CLUSTER NODES for failed or missing masters"}
	}
	return ServerCheck{Name: "cluster", Level: levelPass, Detail: "cluster_state:ok"}
}

func checkACL(ctx context.Context, n checkConn, prefix string) ServerCheck {
	probe := prefix + ":{redquota-check}:probe"
	steps := []struct {
		what string
		args []any
	}{
		{"write (SET)", []any{"set", probe, "1", "px", 10000}},
		{"read (GET)", []any{"get", probe}},
		{"run scripts (EVAL)", []any{"eval", "return redis.call('GET', KEYS[1])", 1, probe}},
		{"read the clock in scripts (TIME)", []any{"eval", "return redis.call('TIME')", 0}},
		{"find quotas (SCAN)", []any{"scan", 0, "match", globEscape(prefix) + ":*", "count", 10}},
		{"delete (DEL)", []any{"del", probe}},
	}
	for _, s := range steps {
		if err := n.Do(ctx, s.args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
			user := whoami(ctx, n)
			return ServerCheck{Name: "acl", Level: levelFail,
				Detail: fmt.Sprintf("user %s cannot %s on %s:*: %v", user, s.what, prefix, err),
				Advice: fmt.Sprintf("ACL SETUSER %s ~%s:* +@read +@write +@scripting +scan +info +time", user, prefix)}
		}
	}
	if what := functionsRefused(ctx, n); what != "" {
		user := whoami(ctx, n)
		return ServerCheck{Name: "acl", Level: levelWarn,
			Detail: fmt.Sprintf("may read, write, script and SCAN %s:*, but user %s may not %s: decisions go as EVALSHA, about 10%% more of Redis's time than FCALL of the scripts' function library", prefix, user, what),
			Advice: fmt.Sprintf("ACL SETUSER %s +fcall +function|load", user)}
	}
	return ServerCheck{Name: "acl", Level: levelPass, Detail: "may read, write, script and SCAN " + prefix + ":*"}
}

// whoami is the connection's ACL user, or "<user>" when it cannot be read.
func whoami(ctx context.Context, n checkConn) string {
	user, err := n.Do(ctx, "acl", "whoami").Text()
	if err != nil {
		return "<user>"
	}
	return user
}

// functionsRefused names what an ACL keeps from the limiter's function
// library (reach.Functions): calling functions (FCALL) or loading them
// (FUNCTION LOAD); "" when both are allowed, or when the server has no
// functions (Redis before 7: checkVersion's concern). Neither probe changes
// anything: the function called does not exist, the library loaded does not
// compile.
func functionsRefused(ctx context.Context, n checkConn) string {
	refused := func(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOPERM") }
	switch {
	case refused(n.Do(ctx, "fcall", "redquota_check_no_such_function", 0).Err()):
		return "call functions (FCALL)"
	case refused(n.Do(ctx, "function", "load", "#!lua name=redquota_check_probe\n(").Err()):
		return "load functions (FUNCTION LOAD)"
	}
	return ""
}

// evictionWarnings returns a warning when the server may evict limiter keys
// (maxmemory set with a policy other than noeviction).
func evictionWarnings(ctx context.Context, c infoClient) ([]string, error) {
	fields, err := infoFields(ctx, c, "memory")
	if err != nil {
		return nil, err
	}
	policy, ok := fields["maxmemory_policy"]
	if !ok {
		return nil, fmt.Errorf("limiter: INFO memory has no maxmemory_policy")
	}
	var warnings []string
	if fields["maxmemory"] != "0" && policy != "noeviction" {
		warnings = append(warnings, fmt.Sprintf(
			"maxmemory-policy %s with maxmemory %s can evict limiter keys (all have TTLs), so limits may overshoot under memory pressure; use noeviction or a separate Redis for limits",
			policy, fields["maxmemory_human"]))
	}
	return warnings, nil
}
