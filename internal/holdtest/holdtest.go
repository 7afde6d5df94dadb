// Package holdtest reads a hold's remaining time for tests outside the
// limiter package (Limiter.Held was folded into Inspect by issue 18).
package holdtest

import (
	"context"
	"time"

	"github.com/redquota/redquota/limiter"
)

// Left is how long the hold on the instance key ("" for none) of quota name
// lasts, as Inspect reads it; 0 when there is none.
func Left(ctx context.Context, lim *limiter.Limiter, name, key string) (time.Duration, error) {
	sts, err := lim.Inspect(ctx, name)
	if err != nil {
		return 0, err
	}
	for _, st := range sts {
		if st.Key == key {
			return st.Hold, nil
		}
	}
	return 0, nil
}
