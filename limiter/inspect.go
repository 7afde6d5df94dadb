package limiter

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/internal/script"
)

// QuotaState is a quota as Inspect found it in Redis: what an operator needs
// to see which limit is full, until when, and whether a hold is in force.
type QuotaState struct {
	// Quota is the quota instance's definition, as the processes using it
	// registered it: q.For(Key) for an instance of a template, so it can be
	// given to Hold and Reset as it is. A single key (Key) is a quota named
	// by the key, with one limit named "". Limits is empty for a hold on a
	// quota no process has decided on lately (no definition in Redis).
	Quota Quota
	// Key is the instance's key (Quota.For's), "" for a quota used without For.
	Key string
	// Limits are the quota's limits as a decision made now would see them, in
	// Quota.Limits order: Remaining units (before any hold), ResetAfter until
	// back to full, Allowed when one unit would fit now, and RetryAfter until
	// one unit would be granted (0 when one fits now), after the units booked
	// ahead (a full fixed window whose next window is booked full too frees
	// one a window later), holds and Quota.Guard aside.
	Limits []LimitResult
	// Hold is how long the hold on the quota still lasts; 0 when none is in force.
	Hold time.Duration
	// HoldReason is what the hold's setter recorded (Hold's reason); "" for none.
	HoldReason string
	// At is the time of the reading, on Redis's clock.
	At time.Time
}

// maxHoldReason is the longest hold reason kept, in bytes.
const maxHoldReason = 200

// holdReasonKey is where the reason of the hold kept at hold is recorded.
func holdReasonKey(hold string) string { return hold + ":why" }

// inspectClient is what Inspect needs beyond Client: Get for definitions, and
// SCAN (on each master of a cluster) to find quotas.
type inspectClient interface {
	Get(ctx context.Context, key string) *redis.StringCmd
}

type scanner interface {
	Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
}

type masterIterator interface {
	ForEachMaster(ctx context.Context, fn func(ctx context.Context, client *redis.Client) error) error
}

// errNotInspectable: Inspect was given a client that cannot read keys or
// SCAN (a go-redis Client, ClusterClient or a client with Get and Scan can).
var errNotInspectable = errors.New("limiter: client cannot GET or SCAN, cannot inspect")

// Inspect reads the state of every quota instance under the limiter's prefix
// that has a definition or a hold in Redis, found with SCAN on every master
// (never KEYS), or, given names, of those whose Quota.Name is one of names
// (every instance of a template), with an empty state for a name that has
// none. Each instance is read in one script call that writes nothing, on
// Redis's clock. They come sorted by name, then key.
//
// Definitions are written by the limiters that decide (about once a minute
// per quota instance and process, and again at its first decision after the
// client reconnects, 5 s after the last write at the soonest, so soon
// after Redis restarts or fails over without them; off the decision path), so an instance appears once a process has decided on
// it, and stays described while its state can exist.
func (l *Limiter) Inspect(ctx context.Context, names ...string) ([]QuotaState, error) {
	if fc, ok := l.client.(failClient); ok {
		return nil, fc.err // a nil client, or options New refused
	}
	ic, ok := l.client.(inspectClient)
	if !ok {
		return nil, errNotInspectable
	}
	want := map[string]bool{}
	for _, n := range names {
		if err := checkKey(n); err != nil {
			return nil, err
		}
		want[n] = false
	}
	holds, err := l.scanHolds(ctx)
	if err != nil {
		return nil, err
	}
	var out []QuotaState
	for _, hold := range holds {
		st, err := l.inspectHold(ctx, ic, hold)
		if err != nil {
			return nil, err
		}
		if st.Quota.Name == "" {
			continue // not a key of this prefix's layout
		}
		if len(names) > 0 {
			if _, ok := want[st.Quota.Name]; !ok {
				continue
			}
			want[st.Quota.Name] = true
		}
		out = append(out, st)
	}
	for _, n := range names {
		if !want[n] {
			want[n] = true
			out = append(out, QuotaState{Quota: Quota{Name: n}})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Quota.Name != out[j].Quota.Name {
			return out[i].Quota.Name < out[j].Quota.Name
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// scanHolds returns the hold keys of every quota instance with a definition
// or a hold: "<base>:hold" for each "<base>:def" or "<base>:hold" found.
func (l *Limiter) scanHolds(ctx context.Context) ([]string, error) {
	match := globEscape(l.opts.Prefix) + ":{*"
	seen := map[string]bool{}
	var mu sync.Mutex
	scan := func(ctx context.Context, c scanner) error {
		var cursor uint64
		for {
			var ks []string
			var next uint64
			err := l.call(ctx, "scan", func(ctx context.Context) error {
				var err error
				ks, next, err = c.Scan(ctx, cursor, match, 1000).Result()
				return err
			})
			if err != nil {
				return err
			}
			mu.Lock()
			for _, k := range ks {
				if base, ok := strings.CutSuffix(k, ":def"); ok {
					seen[base+":hold"] = true
				} else if strings.HasSuffix(k, ":hold") {
					seen[k] = true
				}
			}
			mu.Unlock()
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	switch c := l.client.(type) {
	case masterIterator:
		err = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return scan(ctx, m) })
	case scanner:
		err = scan(ctx, c)
	default:
		err = errNotInspectable
	}
	if err != nil {
		return nil, err
	}
	holds := make([]string, 0, len(seen))
	for h := range seen {
		holds = append(holds, h)
	}
	sort.Strings(holds)
	return holds, nil
}

// quotaOfHold names the quota instance whose hold key is hold, for a hold
// with no definition beside it, from the key layout of Limiter.instance:
// "<prefix>:{name}:hold", "<prefix>:{name:key}:hold", or
// "<prefix>:{group}:@name[:@key]:hold". ok is false for any other key.
func (l *Limiter) quotaOfHold(hold string) (q Quota, ok bool) {
	rest, ok := strings.CutPrefix(hold, l.opts.Prefix+":{")
	if !ok {
		return q, false
	}
	tag, inst, ok := strings.Cut(rest, "}")
	if !ok {
		return q, false
	}
	inst, ok = strings.CutSuffix(inst, ":hold")
	if !ok {
		return q, false
	}
	un := func(s string) string {
		v, err := keys.Unescape(s)
		if err != nil || v == "" {
			ok = false
		}
		return v
	}
	parts := strings.Split(tag, ":")
	switch {
	case inst == "" && len(parts) == 1:
		q = Quota{Name: un(parts[0])}
	case inst == "" && len(parts) == 2:
		q = Quota{Name: un(parts[0])}.For(un(parts[1]))
	case inst != "" && len(parts) == 1:
		ids := strings.Split(strings.TrimPrefix(inst, ":@"), ":@")
		if !strings.HasPrefix(inst, ":@") || len(ids) > 2 {
			return q, false
		}
		q = Quota{Name: un(ids[0]), Group: un(parts[0])}
		if len(ids) == 2 {
			q = q.For(un(ids[1]))
		}
	default:
		return q, false
	}
	// The key must be the one the limiter would build: nothing else is ours.
	return q, ok && l.holdKey(q) == hold
}

// globEscape escapes SCAN MATCH's special characters.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// inspectHold reads the definition, state and hold of the quota instance
// whose hold key is hold. Its Quota.Name is "" when hold is not a key of
// this limiter's layout.
func (l *Limiter) inspectHold(ctx context.Context, ic inspectClient, hold string) (QuotaState, error) {
	var st QuotaState
	var raw []byte
	err := l.call(ctx, "read definition "+defKey(hold), func(ctx context.Context) error {
		var err error
		raw, err = ic.Get(ctx, defKey(hold)).Bytes()
		return err
	})
	switch {
	case errors.Is(err, redis.Nil):
		q, ok := l.quotaOfHold(hold)
		if !ok {
			return st, nil
		}
		st.Quota = q
	case err != nil:
		return st, err
	default:
		if st.Quota, err = parseDefinition(raw); err != nil {
			return st, err
		}
		if l.holdKey(st.Quota) != hold {
			return st, fmt.Errorf("%w: definition %s describes another quota (%q)", ErrBadReply, defKey(hold), st.Quota.Name)
		}
	}
	st.Key = st.Quota.key
	ks := []string{hold, holdReasonKey(hold)}
	args := make([]any, 0, 4*len(st.Quota.Limits))
	for _, nl := range st.Quota.Limits {
		ks = append(ks, l.stateKeyOf(st.Quota, nl.Name, nl.Limit.Algorithm))
		a := argsFor(nl.Limit, 0)
		args = append(args, a[0], a[1], a[2], a[3])
	}
	reply, err := l.script(ctx, "inspect", script.Inspect, ks, args...)
	if err != nil {
		return st, err
	}
	v, ok := reply.([]any)
	if !ok {
		return st, fmt.Errorf("%w: inspect.lua replied %T, not an array", ErrBadReply, reply)
	}
	n := len(st.Quota.Limits)
	if len(v) != 3+3*n {
		return st, fmt.Errorf("%w: inspect.lua returned %d values for %d limits", ErrBadReply, len(v), n)
	}
	ints := make([]int64, len(v))
	for i, x := range v {
		if i == 2 {
			continue
		}
		k, ok := x.(int64)
		if !ok || k < 0 {
			return st, fmt.Errorf("%w: inspect.lua value %d is %v", ErrBadReply, i, x)
		}
		ints[i] = k
	}
	why, ok := v[2].(string)
	if !ok {
		return st, fmt.Errorf("%w: inspect.lua hold reason is %T", ErrBadReply, v[2])
	}
	st.At = time.UnixMicro(ints[0])
	if ints[1] > ints[0] {
		st.Hold, st.HoldReason = us(ints[1]-ints[0]), why
	}
	for i, nl := range st.Quota.Limits {
		rem := min(ints[3+3*i], int64(nl.Limit.most()))
		st.Limits = append(st.Limits, LimitResult{Name: nl.Name, Quota: st.Quota.Name, Limit: nl.Limit,
			Allowed: rem >= 1, Remaining: int(rem), ResetAfter: us(ints[4+3*i]), RetryAfter: us(ints[5+3*i])})
	}
	return st, nil
}
