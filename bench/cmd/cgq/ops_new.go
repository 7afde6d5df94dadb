package main

import (
	"context"
	"errors"
	"os"

	"github.com/redquota/redquota/limiter"
)

func ok(allowed bool, err error) error {
	if err == nil && !allowed {
		return errors.New("denied")
	}
	return err
}

func ops(lim *limiter.Limiter) []op {
	q := limiter.Quota{Name: "q3", Limits: q3}
	if src := os.Getenv("CGQ_PROBE"); src != "" {
		c := probeClient
		return []op{{"Probe", func(ctx context.Context) error {
			return c.Eval(ctx, src, []string{"{p}a", "{p}b", "{p}c"}, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16).Err()
		}}}
	}
	return []op{
		{"Allow", func(ctx context.Context) error {
			r, err := lim.Allow(ctx, limiter.Key("hot", gcra).Take(1))
			return ok(r.Allowed, err)
		}},
		{"AllowQuota(3)", func(ctx context.Context) error {
			r, err := lim.Allow(ctx, limiter.Charge{Quota: q, Cost: cost3})
			return ok(r.Allowed, err)
		}},
		{"Wait", func(ctx context.Context) error { return lim.Wait(ctx, limiter.Key("wait", gcra).Take(1)) }},
		{"WaitQuota(3)", func(ctx context.Context) error { return lim.Wait(ctx, limiter.Charge{Quota: q, Cost: cost3}) }},
		{"Lease", func(ctx context.Context) error {
			ls, err := lim.NewLeaser(limiter.Key("lease", fw).Take(1), limiter.LeaseOptions{})
			if err != nil {
				return err
			}
			return ok(ls.Allow(ctx, 1))
		}},
		{"LeaseQuota(3)", func(ctx context.Context) error {
			ls, err := lim.NewLeaser(limiter.Charge{Quota: limiter.Quota{Name: "lq3", Limits: q3}, Cost: cost3}, limiter.LeaseOptions{})
			if err != nil {
				return err
			}
			return ok(ls.Allow(ctx, 1))
		}},
	}
}
