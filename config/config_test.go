package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addrs[0] != "localhost:6379" || c.SocketTimeout != time.Second || c.PoolSize != defaultPoolSize() || c.MaxRetries != 2 {
		t.Fatalf("defaults: %+v", c)
	}
	o := c.Options()
	if o.ReadTimeout != time.Second || o.WriteTimeout != time.Second || o.DialTimeout != 2*time.Second || o.MaxRetries != 2 || o.PoolSize != c.PoolSize {
		t.Fatalf("options not explicit: %+v", o)
	}
}

func TestParseSeedVariables(t *testing.T) {
	c, err := Parse(env(map[string]string{
		"REDIS_HOST": "redis.internal", "REDIS_PORT": "6380", "REDIS_PASSWORD": "s3cret",
		"REDIS_DB": "2", "REDIS_MAX_CONNECTIONS": "50", "REDIS_SOCKET_TIMEOUT": "0.5",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addrs[0] != "redis.internal:6380" || c.Password != "s3cret" || c.DB != 2 || c.PoolSize != 50 || c.SocketTimeout != 500*time.Millisecond {
		t.Fatalf("got %+v", c)
	}
	if strings.Contains(c.String(), "s3cret") {
		t.Fatal("String() leaks the password")
	}
	if _, ok := c.NewClient().(*redis.Client); !ok {
		t.Fatal("one address should give a plain client")
	}
}

func TestParseURLs(t *testing.T) {
	cases := []struct {
		url     string
		addrs   []string
		db      int
		tls     bool
		cluster bool
		network string
		pw      string
	}{
		{"redis://localhost:6379/3", []string{"localhost:6379"}, 3, false, false, "tcp", ""},
		{"rediss://user:pw@example.com", []string{"example.com:6379"}, 0, true, false, "tcp", "pw"},
		{"redis://:pw@h:1", []string{"h:1"}, 0, false, false, "tcp", "pw"},
		{"unix:///run/redis.sock?db=4", []string{"/run/redis.sock"}, 4, false, false, "unix", ""},
		{"redis://a:7000,redis://b:7001,redis://c:7002", []string{"a:7000", "b:7001", "c:7002"}, 0, false, true, "tcp", ""},
	}
	for _, tc := range cases {
		c, err := Parse(env(map[string]string{"REDIS_URL": tc.url}))
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		if strings.Join(c.Addrs, ",") != strings.Join(tc.addrs, ",") || c.DB != tc.db || c.TLS != tc.tls || c.Cluster != tc.cluster || c.Network != tc.network || c.Password != tc.pw {
			t.Fatalf("%s: got %+v", tc.url, c)
		}
		if tc.cluster {
			if _, ok := c.NewClient().(*redis.ClusterClient); !ok {
				t.Fatalf("%s: several addresses should give a cluster client", tc.url)
			}
		}
		if tc.tls && c.Options().TLSConfig == nil {
			t.Fatalf("%s: rediss:// without TLS config", tc.url)
		}
	}
}

func TestParseErrorsNeverEchoPassword(t *testing.T) {
	const pw = "hunter2-very-secret"
	bads := []map[string]string{
		{"REDIS_URL": "http://u:" + pw + "@host"},
		{"REDIS_URL": "redis://u:" + pw + "@host:notaport"},
		{"REDIS_URL": "redis://u:" + pw + "@host:6379/x"},
		{"REDIS_URL": "redis://u:" + pw + "@ho st:1"},
		{"REDIS_URL": "redis://u:" + pw + "@h:1,rediss://h:2"},
		{"REDIS_URL": "unix://"},
		{"REDIS_PORT": "70000", "REDIS_PASSWORD": pw},
		{"REDIS_DB": "-1", "REDIS_PASSWORD": pw},
		{"REDIS_MAX_CONNECTIONS": "zero"},
		{"REDIS_SOCKET_TIMEOUT": "-3"},
		{"REDIS_CLUSTER": "maybe"},
		{"REDIS_CLUSTER": "1", "REDIS_DB": "1"},
		{"REDIS_TLS_CA_FILE": "/nonexistent/ca.pem", "REDIS_PASSWORD": pw},
		{"REDIS_TLS_CA_FILE": "/etc/hostname"}, // not PEM
	}
	for _, m := range bads {
		_, err := Parse(env(m))
		if err == nil {
			t.Fatalf("%v: accepted", m)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("%v: %v is not ErrInvalid", m, err)
		}
		if strings.Contains(err.Error(), pw) {
			t.Fatalf("%v: error echoes the password: %v", m, err)
		}
	}
}

// REDIS_URL parameters config does not read are refused, naming them, not
// ignored: redis://h:6379?pool_size=100 (go-redis's ParseURL reads it)
// would otherwise run with the default pool, and redis://h:6379?db=2 on
// database 0. A unix socket's db parameter is read.
func TestParseRefusesUnreadParameters(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"redis://h:6379?pool_size=100", "(pool_size)"},
		{"redis://h:6379/0?db=2&dial_timeout=3s", "(db, dial_timeout)"},
		{"rediss://h:6379,rediss://g:6379?protocol=3", "(protocol)"},
		{"unix:///tmp/r.sock?db=1&password=x", "(password)"},
	} {
		_, err := Parse(env(map[string]string{"REDIS_URL": c.url}))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid naming %s", c.url, err, c.want)
		}
	}
	cfg, err := Parse(env(map[string]string{"REDIS_URL": "unix:///tmp/r.sock?db=3"}))
	if err != nil || cfg.DB != 3 {
		t.Fatalf("unix db parameter: %+v %v", cfg, err)
	}
}
