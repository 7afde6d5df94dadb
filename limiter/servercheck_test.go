package limiter

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

func levels(cs []ServerCheck) map[string]string {
	m := map[string]string{}
	for _, c := range cs {
		m[c.Name] = c.Level
	}
	return m
}

// Every check passes or warns as the server's settings call for, and a user
// without rights on the prefix fails the ACL check with the grant to make.
func TestCheckServer(t *testing.T) {
	ctx := context.Background()
	t.Run("defaults of the test server", func(t *testing.T) {
		c := redistest.NewReal(t)
		cs, err := CheckServer(ctx, c, "")
		require.NoError(t, err)
		require.Equal(t, map[string]string{"version": "pass", "eviction": "pass", "persistence": "warn", "cluster": "pass", "acl": "pass"}, levels(cs))
	})
	t.Run("aof, lru, restricted user", func(t *testing.T) {
		srv := redistest.Private(t, "--appendonly", "yes", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
		admin := srv.Client()
		defer admin.Close()
		require.NoError(t, admin.Do(ctx, "acl", "setuser", "app", "on", ">pw", "~other:*", "+@all").Err())
		o := redistest.ClientOptions(srv.Addr())
		o.Username, o.Password = "app", "pw"
		c := redis.NewClient(o)
		defer c.Close()
		cs, err := CheckServer(ctx, c, "rq")
		require.NoError(t, err)
		require.Equal(t, map[string]string{"version": "pass", "eviction": "warn", "persistence": "pass", "cluster": "pass", "acl": "fail"}, levels(cs))
		acl := cs[len(cs)-1]
		require.Contains(t, acl.Detail, "user app cannot write (SET) on rq:*")
		require.Equal(t, "ACL SETUSER app ~rq:* +@read +@write +@scripting +scan +info +time", acl.Advice)
	})
	t.Run("functions refused", func(t *testing.T) {
		srv := redistest.Private(t)
		admin := srv.Client()
		defer admin.Close()
		for _, tc := range []struct{ user, deny, want string }{
			{"nofcall", "-fcall", "user nofcall may not call functions (FCALL)"},
			{"noload", "-function|load", "user noload may not load functions (FUNCTION LOAD)"},
		} {
			require.NoError(t, admin.Do(ctx, "acl", "setuser", tc.user, "on", ">pw", "~rq:*", "+@all", tc.deny).Err())
			o := redistest.ClientOptions(srv.Addr())
			o.Username, o.Password = tc.user, "pw"
			c := redis.NewClient(o)
			cs, err := CheckServer(ctx, c, "rq")
			c.Close()
			require.NoError(t, err)
			acl := cs[len(cs)-1]
			require.Equal(t, "warn", acl.Level, acl.Detail)
			require.Contains(t, acl.Detail, tc.want)
			require.Equal(t, "ACL SETUSER "+tc.user+" +fcall +function|load", acl.Advice)
		}
		libs, err := admin.FunctionList(ctx, redis.FunctionListQuery{}).Result()
		require.NoError(t, err)
		require.Empty(t, libs, "the probe loaded a library")
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.NewClusterClient(t)
		cs, err := CheckServer(ctx, c, "rq")
		require.NoError(t, err)
		require.Equal(t, "pass", levels(cs)["cluster"])
		require.Equal(t, "pass", levels(cs)["acl"])
		for _, c := range cs {
			if c.Level == "pass" && c.Name != "acl" {
				require.True(t, strings.HasSuffix(c.Detail, "(all 3 masters)"), c.Detail)
			}
		}
		// A plain client on one cluster node is told to be a cluster client.
		one := redis.NewClient(redistest.ClientOptions(redistest.SharedCluster(t)[0].Addr()))
		defer one.Close()
		cs, err = CheckServer(ctx, one, "rq")
		require.NoError(t, err)
		require.Equal(t, "fail", levels(cs)["cluster"])
	})
}

// A cluster master that does not answer is the "cluster" check's failure,
// naming it, and the other checks run on the masters that answer. It used to
// be an error ("limiter: PING: … refused") when the dead master sorted first,
// and otherwise a "could not check" warning per check, with advice about
// INFO and CONFIG GET rights.
func TestCheckServerMasterDown(t *testing.T) {
	ctx := context.Background()
	nodes := redistest.PrivateCluster(t)
	c := redis.NewClusterClient(redistest.ClusterOptions(nodes))
	defer c.Close()
	cs, err := CheckServer(ctx, c, "rq")
	require.NoError(t, err)
	require.Equal(t, "pass", levels(cs)["cluster"])
	// The master whose address sorts first (CheckServer PINGed it alone),
	// then another.
	first := 0
	for i, n := range nodes {
		if n.Addr() < nodes[first].Addr() {
			first = i
		}
	}
	for _, dead := range []int{first, (first + 1) % len(nodes)} {
		nodes[dead].Stop()
		cs, err = CheckServer(ctx, c, "rq")
		require.NoError(t, err, "master %d down", dead)
		for _, ch := range cs {
			require.NotContains(t, ch.Detail, "could not check", "%+v", ch)
			if ch.Name == "cluster" {
				require.Equal(t, "fail", ch.Level)
				require.Contains(t, ch.Detail, "1 of 3 masters do not answer ("+nodes[dead].Addr()+")")
			}
		}
		require.Contains(t, levels(cs), "cluster")
		require.NoError(t, nodes[dead].Start())
	}
}
