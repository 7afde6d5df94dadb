package reach

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// doer is the Do method of a go-redis client.
type doer interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// Processor is a go-redis client's Process. Every go-redis client (Client,
// ClusterClient, Ring, AutoPipeliner) has it, and since go-redis 9.23 each
// honours a command's NoRetry.
type Processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

// Once reports whether Eval sends its calls on c at most once (c is a
// go-redis client, which honours a command's NoRetry).
func Once(c any) bool {
	_, ok := c.(Processor)
	return ok
}

// onceCmd is a script call go-redis never sends twice: its NoRetry stops the
// client's retries once the command may have reached Redis. go-redis still
// sends again one that never left (a connection it closed before writing),
// and follows MOVED and ASK, which Redis answers without running the script:
// either way Redis runs the call at most once, whatever the client's
// MaxRetries.
type onceCmd struct{ *redis.Cmd }

// NoRetry tells go-redis not to resend the command.
func (onceCmd) NoRetry() bool { return true }

// SendOnce wraps cmd so that go-redis sends it at most once (for a
// pipeline's Process).
func SendOnce(cmd *redis.Cmd) redis.Cmder { return onceCmd{cmd} }

// Eval runs cmd ("evalsha", sha, numkeys, keys…, args…: keys strings, sha
// a string) on c and, when Redis answers NOSCRIPT (after SCRIPT FLUSH or a
// restart), sends it again as EVAL with src, the script's source. The keys
// and arguments can be boxed once and reused. On a go-redis client (Once)
// the call is sent at most once (onceCmd); other clients may retry it.
//
// With f and fn (the name of the script's function in f's library, a string
// boxed once, so a call allocates none) it first sends the call as FCALL fn
// on a go-redis client, loading the library where Redis
// answers that it has no such function (see Functions). cmd's first two
// values may be changed.
//
// via, when not nil, sends the calls instead of c (c's autopipeliner, say);
// c still loads the library.
func Eval(ctx context.Context, c redis.Scripter, via Processor, f *Functions, fn any, src string, cmd []any) (any, error) {
	p, ok := via, via != nil
	if !ok {
		p, ok = c.(Processor)
	}
	if ok {
		if f != nil && fn != nil && !f.off.Load() {
			if v, err, done := f.call(ctx, c, p, fn, cmd); done {
				return v, err
			}
		}
		v, err := evalOnce(ctx, p, cmd)
		if NoScript(err) {
			cmd[0], cmd[1] = "eval", src
			v, err = evalOnce(ctx, p, cmd)
		}
		return v, err
	}
	d, ok := c.(doer)
	if !ok {
		keys := make([]string, cmd[2].(int))
		for i := range keys {
			keys[i] = cmd[3+i].(string)
		}
		args := cmd[3+len(keys):]
		v, err := c.EvalSha(ctx, cmd[1].(string), keys, args...).Result()
		if NoScript(err) {
			v, err = c.Eval(ctx, src, keys, args...).Result()
		}
		return v, err
	}
	v, err := d.Do(ctx, cmd...).Result()
	if NoScript(err) {
		cmd[0], cmd[1] = "eval", src
		v, err = d.Do(ctx, cmd...).Result()
	}
	return v, err
}

// Functions is one library of Redis functions (FUNCTION LOAD, FCALL: Redis
// ≥ 7.0) as Eval uses it on one client: each call goes as FCALL; where Redis
// answers that the function does not exist (a node that never loaded it, or
// after FUNCTION FLUSH), the library is loaded on the node that answered and
// the call sent again. Once a server does not know FCALL (Redis < 7.0,
// miniredis), refuses the library, or the client's nodes cannot be reached
// one by one (not a Client, ClusterClient or Ring), every call goes as
// EVALSHA from then on. None of these answers ran the call, so none is sent
// twice.
type Functions struct {
	lib string
	off atomic.Bool
}

// NewFunctions returns the use of the library whose source is lib.
func NewFunctions(lib string) *Functions { return &Functions{lib: lib} }

// call sends cmd as FCALL fn; done is false when it must go as EVALSHA,
// with cmd as it came.
func (f *Functions) call(ctx context.Context, c any, p Processor, fn any, cmd []any) (v any, err error, done bool) {
	sha := cmd[1]
	cmd[0], cmd[1] = "fcall", fn
	if v, err = evalOnce(ctx, p, cmd); err == nil || !noFunction(err) && !fcallRefused(err) {
		return v, err, true
	}
	if fcallRefused(err) {
		f.off.Store(true)
	} else if key, _ := cmd[3].(string); cmd[2] != 0 && key != "" {
		lerr := f.load(ctx, c, key)
		switch {
		case lerr == nil:
			if v, err = evalOnce(ctx, p, cmd); !noFunction(err) {
				return v, err, true
			}
			// Loaded, and gone again (a FUNCTION FLUSH): EVALSHA this time.
		case loadRefused(lerr):
			// Redis said no (an ACL without FUNCTION, a library it cannot
			// load), or it cannot be asked: EVALSHA from now on. A lost
			// connection, a deadline or a passing state (LOADING, READONLY
			// after a failover, OOM…) only sends this call as EVALSHA.
			f.off.Store(true)
		}
	}
	cmd[0], cmd[1] = "evalsha", sha
	return nil, nil, false
}

// loadRefused reports whether a FUNCTION LOAD's error is for good: the
// server's "ERR …" or "NOPERM …" answer, or a client load cannot reach node
// by node; not a connection's error nor a passing server state (LOADING,
// READONLY, MASTERDOWN, TRYAGAIN, CLUSTERDOWN, BUSY, OOM).
func loadRefused(err error) bool {
	var rerr redis.Error
	if errors.Is(err, errNoLoader) {
		return true
	}
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "ERR") || strings.HasPrefix(msg, "NOPERM")
}

// errNoNode: the node that holds key could not be found now.
var errNoNode = errors.New("reach: no node for the key")

// load loads the library on the node that holds key.
func (f *Functions) load(ctx context.Context, c any, key string) error {
	switch c := c.(type) {
	case *redis.Client:
		return loadOn(ctx, c, f.lib)
	case *redis.ClusterClient:
		node, err := c.MasterForKey(ctx, key)
		if err != nil {
			return errNoNode
		}
		return loadOn(ctx, node, f.lib)
	case *redis.Ring:
		return c.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			return loadOn(ctx, node, f.lib)
		})
	}
	return errNoLoader
}

// errNoLoader: the client is not one whose nodes load can reach.
var errNoLoader = errors.New("reach: no way to reach each node of this client")

// loadOn loads lib on node; a library of that name already there (another
// process loaded it first) is the same library.
func loadOn(ctx context.Context, node *redis.Client, lib string) error {
	err := node.FunctionLoad(ctx, lib).Err()
	if err != nil && strings.Contains(err.Error(), "already exists") {
		return nil
	}
	return err
}

// noFunction reports whether err is Redis's answer to an FCALL of a function
// it does not hold.
func noFunction(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Function not found")
}

// fcallRefused reports whether err is a server's refusal of FCALL itself: a
// command it does not know (before Redis 7.0, miniredis, a proxy) or one the
// user may not run (an ACL that allows EVALSHA but not FCALL). Neither ran
// the call.
func fcallRefused(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(strings.ToLower(msg), "unknown command") ||
		strings.HasPrefix(msg, "NOPERM") && strings.Contains(msg, "'fcall'")
}

func evalOnce(ctx context.Context, p Processor, cmd []any) (any, error) {
	c := redis.NewCmd(ctx, cmd...)
	if err := p.Process(ctx, onceCmd{c}); err != nil {
		// Not c.Result(): a Processor that stopped waiting (its context
		// ended) may still be filling c in.
		return nil, err
	}
	return c.Result()
}

// Run runs the script s (whose source is src) on c with keys and args:
// EVALSHA, then EVAL when Redis answers NOSCRIPT, as Eval, but sent as the
// client sends any command (its retries apply). The limiter's holds, syncs
// and cancels and every cache script go through it.
func Run(ctx context.Context, c redis.Scripter, s *redis.Script, src string, keys []string, args ...any) *redis.Cmd {
	r := c.EvalSha(ctx, s.Hash(), keys, args...)
	if NoScript(r.Err()) {
		return c.Eval(ctx, src, keys, args...)
	}
	return r
}

// NoScript reports whether err is Redis's NOSCRIPT: the script is not in
// its cache (after SCRIPT FLUSH, a restart or a failover).
func NoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || strings.HasPrefix(err.Error(), "NOSCRIPT"))
}

// Off reports whether calls go as EVALSHA for good (see Functions).
func (f *Functions) Off() bool { return f.off.Load() }
