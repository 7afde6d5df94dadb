package telemetry_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"

	"github.com/redquota/redquota/internal/oteltest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/telemetry"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// A new connection's set-up (HELLO, CLIENT SETINFO, CLIENT
// MAINT_NOTIFICATIONS, which Redis 7.0 refuses) records no error span, and
// commands without a recording parent record no span at all: with
// InstrumentClient an untraced decision must not start a trace of its own.
func TestInstrumentClientSpans(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	for _, unparented := range []bool{false, true} {
		h := oteltest.New()
		h.Providers.UnparentedClientSpans = unparented
		c := redis.NewClient(redistest.ClientOptions(srv.Addr())) // no connection yet
		require.NoError(t, telemetry.InstrumentClient(c, h.Providers))

		require.NoError(t, c.Ping(ctx).Err()) // no parent: dials, sets up, pings
		pctx, parent := h.Parent()
		require.NoError(t, c.Set(pctx, redistest.NewPrefix(t)+":k", "v", 0).Err())
		// A second connection, set up under a recording parent.
		c2 := redis.NewClient(redistest.ClientOptions(srv.Addr()))
		require.NoError(t, telemetry.InstrumentClient(c2, h.Providers))
		require.NoError(t, c2.Ping(pctx).Err())
		parent.End()
		require.NoError(t, c.Close())
		require.NoError(t, c2.Close())

		var roots, children int
		for _, s := range h.Rec.Ended() {
			require.NotEqual(t, codes.Error, s.Status().Code, "span %q: %s", s.Name(), s.Status().Description)
			switch {
			case s.Name() == "caller":
			case s.Parent().IsValid():
				children++
			default:
				roots++
				t.Logf("root span %q", s.Name())
			}
		}
		require.Equal(t, 2, children, "set and ping under the caller")
		if unparented {
			require.Positive(t, roots, "UnparentedClientSpans keeps the ping's root span")
		} else {
			require.Zero(t, roots, "no span without a recording parent")
		}
	}
}

// A nil client, untyped or a nil pointer of each go-redis client type, is an
// error naming it; a nil *redis.Client used to panic inside redisotel.
func TestInstrumentClientNil(t *testing.T) {
	for _, c := range []redis.UniversalClient{nil, (*redis.Client)(nil), (*redis.ClusterClient)(nil), (*redis.Ring)(nil)} {
		require.NotPanics(t, func() {
			err := telemetry.InstrumentClient(c, telemetry.Providers{})
			require.ErrorContains(t, err, "nil Redis client", "%T", c)
		}, "%T", c)
	}
}
