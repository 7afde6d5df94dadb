package redistest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/keys"
)

// ErrCrossSlot is returned by SlotCheck for a script call whose keys hash to
// more than one cluster slot. Redis Cluster refuses such a call with CROSSSLOT;
// the hook makes single-node tests refuse it too, so a wrong key layout is
// caught by every test, not only by the cluster ones.
var ErrCrossSlot = errors.New("redistest: script keys span more than one hash slot")

// SlotCheck is a go-redis hook that refuses EVAL, EVALSHA, EVAL_RO, EVALSHA_RO
// and FCALL calls whose keys are not all in one hash slot.
type SlotCheck struct{}

// DialHook implements redis.Hook.
func (SlotCheck) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (SlotCheck) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := checkSlots(cmd); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (SlotCheck) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if err := checkSlots(cmd); err != nil {
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmds)
	}
}

func checkSlots(cmd redis.Cmder) error {
	switch strings.ToLower(cmd.Name()) {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
	default:
		return nil
	}
	args := cmd.Args()
	if len(args) < 3 {
		return nil
	}
	n, err := strconv.Atoi(fmt.Sprint(args[2]))
	if err != nil || n <= 1 || 3+n > len(args) {
		return nil
	}
	first := Slot(fmt.Sprint(args[3]))
	for _, k := range args[4 : 3+n] {
		if s := Slot(fmt.Sprint(k)); s != first {
			return fmt.Errorf("%w: %q is in slot %d, %q in slot %d", ErrCrossSlot, args[3], first, k, s)
		}
	}
	return nil
}

// Slot returns the Redis Cluster hash slot of key, honouring {hash tags}.
func Slot(key string) int { return keys.Slot(key) }
