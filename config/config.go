package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrInvalid is wrapped by every configuration error.
var ErrInvalid = errors.New("config: invalid Redis configuration")

// Defaults applied when a variable is unset (each is documented on the
// Config field or the variable it stands in for).
const (
	defaultHost          = "localhost"
	defaultPort          = 6379
	defaultSocketTimeout = time.Second
	defaultDialTimeout   = 2 * time.Second
	defaultMaxRetries    = 2
)

// defaultPoolSize is the pool size when REDIS_MAX_CONNECTIONS is unset: 10 per CPU.
func defaultPoolSize() int { return 10 * runtime.GOMAXPROCS(0) }

// Config is a parsed Redis configuration.
type Config struct {
	// Addrs are host:port pairs, or one socket path for unix://. More than one
	// address, or Cluster, makes a cluster client.
	Addrs []string
	// Network is "tcp" or "unix".
	Network  string
	Username string
	Password string
	DB       int
	// TLS is set by a rediss:// URL.
	TLS bool
	// Cluster forces a cluster client even for one seed address (REDIS_CLUSTER=1).
	Cluster bool
	// PoolSize from REDIS_MAX_CONNECTIONS; default 10 per CPU (GOMAXPROCS).
	PoolSize int
	// SocketTimeout bounds each read and write (REDIS_SOCKET_TIMEOUT, seconds); default 1 s.
	SocketTimeout time.Duration
	// DialTimeout bounds each connection attempt; default 2 s.
	DialTimeout time.Duration
	// MaxRetries is go-redis's per-command retry count; default 2. -1 disables retries.
	MaxRetries int
	// TLSCAFile is a PEM file of CA certificates to trust for rediss://
	// (REDIS_TLS_CA_FILE), for servers with a private CA; default: the system roots.
	TLSCAFile string
	rootCAs   *x509.CertPool
}

// String describes the configuration with the password redacted.
func (c Config) String() string {
	pw := ""
	if c.Password != "" {
		pw = " password=<redacted>"
	}
	return fmt.Sprintf("addrs=%v network=%s db=%d tls=%t cluster=%t pool=%d timeout=%s%s",
		c.Addrs, c.Network, c.DB, c.TLS, c.Cluster, c.PoolSize, c.SocketTimeout, pw)
}

// FromEnv reads the configuration from the process environment.
func FromEnv() (Config, error) { return Parse(os.LookupEnv) }

func bad(variable, why string) error {
	return fmt.Errorf("%w: %s %s", ErrInvalid, variable, why)
}

// Parse reads the configuration through lookup (os.LookupEnv in production, a
// map in tests). REDIS_URL, when set, wins over REDIS_HOST (default
// localhost), REDIS_PORT (default 6379, also a URL's when it has none),
// REDIS_PASSWORD and REDIS_DB; REDIS_MAX_CONNECTIONS, REDIS_SOCKET_TIMEOUT and
// REDIS_CLUSTER apply to both. REDIS_URL is redis://[user:pass@]host:port[/db],
// rediss://… or unix:///path[?db=N], several separated by commas for a
// cluster; any other URL parameter (go-redis's pool_size, dial_timeout…)
// is ErrInvalid, not ignored.
func Parse(lookup func(string) (string, bool)) (Config, error) {
	c := Config{
		Network:       "tcp",
		PoolSize:      defaultPoolSize(),
		SocketTimeout: defaultSocketTimeout,
		DialTimeout:   defaultDialTimeout,
		MaxRetries:    defaultMaxRetries,
	}
	get := func(k string) string {
		v, _ := lookup(k)
		return strings.TrimSpace(v)
	}
	if u := get("REDIS_URL"); u != "" {
		if err := c.parseURLs(u); err != nil {
			return Config{}, err
		}
	} else {
		host := get("REDIS_HOST")
		if host == "" {
			host = defaultHost
		}
		if strings.ContainsAny(host, " /@") {
			return Config{}, bad("REDIS_HOST", "is not a host name")
		}
		port := defaultPort
		if p := get("REDIS_PORT"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return Config{}, bad("REDIS_PORT", "must be a number from 1 to 65535")
			}
			port = n
		}
		c.Addrs = []string{host + ":" + strconv.Itoa(port)}
		c.Password, _ = lookup("REDIS_PASSWORD")
		if d := get("REDIS_DB"); d != "" {
			n, err := strconv.Atoi(d)
			if err != nil || n < 0 {
				return Config{}, bad("REDIS_DB", "must be a number ≥ 0")
			}
			c.DB = n
		}
	}
	if v := get("REDIS_MAX_CONNECTIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			return Config{}, bad("REDIS_MAX_CONNECTIONS", "must be a number from 1 to 100000")
		}
		c.PoolSize = n
	}
	if v := get("REDIS_SOCKET_TIMEOUT"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 3600 {
			return Config{}, bad("REDIS_SOCKET_TIMEOUT", "must be seconds, > 0 and ≤ 3600 (e.g. 0.5)")
		}
		c.SocketTimeout = time.Duration(f * float64(time.Second))
	}
	if v := get("REDIS_CLUSTER"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Config{}, bad("REDIS_CLUSTER", "must be true or false")
		}
		c.Cluster = c.Cluster || b
	}
	if v := get("REDIS_TLS_CA_FILE"); v != "" {
		pem, err := os.ReadFile(v)
		if err != nil {
			return Config{}, bad("REDIS_TLS_CA_FILE", "cannot be read")
		}
		c.rootCAs = x509.NewCertPool()
		if !c.rootCAs.AppendCertsFromPEM(pem) {
			return Config{}, bad("REDIS_TLS_CA_FILE", "holds no PEM certificate")
		}
		c.TLSCAFile = v
	}
	if c.Cluster && c.DB != 0 {
		return Config{}, bad("REDIS_DB", "must be 0 on a cluster")
	}
	return c, nil
}

// parseURLs accepts one URL or several separated by commas (a cluster's seeds).
func (c *Config) parseURLs(s string) error {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			// url.Parse's error quotes the whole input, password included: do not wrap it.
			return bad("REDIS_URL", "is not a valid URL")
		}
		read := ""
		if u.Scheme == "unix" {
			read = "db"
		}
		if err := unread(u.Query(), read); err != nil {
			return err
		}
		switch u.Scheme {
		case "redis", "rediss":
			if u.Host == "" {
				return bad("REDIS_URL", "has no host")
			}
			if u.Port() == "" {
				u.Host += ":" + strconv.Itoa(defaultPort)
			} else if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
				return bad("REDIS_URL", "has a bad port")
			}
			c.Addrs = append(c.Addrs, u.Host)
			if i == 0 {
				c.TLS = u.Scheme == "rediss"
			} else if c.TLS != (u.Scheme == "rediss") {
				return bad("REDIS_URL", "mixes redis:// and rediss://")
			}
			if db := strings.Trim(u.Path, "/"); db != "" {
				n, err := strconv.Atoi(db)
				if err != nil || n < 0 {
					return bad("REDIS_URL", "has a bad database number in its path")
				}
				c.DB = n
			}
		case "unix":
			if len(parts) > 1 {
				return bad("REDIS_URL", "cannot list a unix socket among cluster seeds")
			}
			if u.Path == "" {
				return bad("REDIS_URL", "has no socket path")
			}
			c.Network = "unix"
			c.Addrs = []string{u.Path}
			if db := u.Query().Get("db"); db != "" {
				n, err := strconv.Atoi(db)
				if err != nil || n < 0 {
					return bad("REDIS_URL", "has a bad db parameter")
				}
				c.DB = n
			}
		default:
			return bad("REDIS_URL", "must start with redis://, rediss:// or unix://")
		}
		if u.User != nil {
			c.Username = u.User.Username()
			if pw, ok := u.User.Password(); ok {
				c.Password = pw
			} else if c.Username != "" {
				// redis://:password@ and redis://password@ are both common; treat a lone user as the password.
				c.Password, c.Username = c.Username, ""
			}
		}
	}
	if len(parts) > 1 {
		c.Cluster = true
	}
	return nil
}

// unread returns an error naming the parameters of q other than read: the
// pool size, timeouts and database have variables or a path of
// their own, and a parameter ignored would leave the client built otherwise
// than its URL says. Only names are quoted: values may be secrets.
func unread(q url.Values, read string) error {
	var names []string
	for k := range q {
		if k != read {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	return bad("REDIS_URL", fmt.Sprintf("has parameters config does not read (%s): the database goes in the path (/0; a unix socket's in ?db=), the pool size in REDIS_MAX_CONNECTIONS, timeouts in REDIS_SOCKET_TIMEOUT", strings.Join(names, ", ")))
}

// NewClient returns a *redis.Client, or a *redis.ClusterClient when the
// configuration names several addresses or Cluster is set.
func (c Config) NewClient() redis.UniversalClient {
	if c.Cluster {
		return redis.NewClusterClient(c.clusterOptions())
	}
	return redis.NewClient(c.Options())
}

// Options returns the single-node client options, every timeout and retry set explicitly.
func (c Config) Options() *redis.Options {
	o := &redis.Options{
		Network:         c.Network,
		Username:        c.Username,
		Password:        c.Password,
		DB:              c.DB,
		DialTimeout:     c.DialTimeout,
		ReadTimeout:     c.SocketTimeout,
		WriteTimeout:    c.SocketTimeout,
		PoolSize:        c.PoolSize,
		PoolTimeout:     c.SocketTimeout + time.Second,
		MaxRetries:      c.MaxRetries,
		MinRetryBackoff: 8 * time.Millisecond,
		MaxRetryBackoff: 128 * time.Millisecond,
		DialerRetries:   1,
		// Context deadlines bound reads and writes: without this go-redis
		// ignores them, and a limiter's Wait or Timeout could not cut a slow call short.
		ContextTimeoutEnabled: true,
	}
	if len(c.Addrs) > 0 {
		o.Addr = c.Addrs[0]
	}
	if c.TLS {
		o.TLSConfig = tlsConfig(o.Addr, c.rootCAs)
	}
	return o
}

// clusterOptions returns the cluster client options, every timeout and retry
// set explicitly: those of Options, for every seed of Addrs.
func (c Config) clusterOptions() *redis.ClusterOptions {
	o := c.Options()
	return &redis.ClusterOptions{
		Addrs:                 c.Addrs,
		Username:              o.Username,
		Password:              o.Password,
		DialTimeout:           o.DialTimeout,
		ReadTimeout:           o.ReadTimeout,
		WriteTimeout:          o.WriteTimeout,
		PoolSize:              o.PoolSize,
		PoolTimeout:           o.PoolTimeout,
		MaxRetries:            o.MaxRetries,
		MinRetryBackoff:       o.MinRetryBackoff,
		MaxRetryBackoff:       o.MaxRetryBackoff,
		DialerRetries:         o.DialerRetries,
		MaxRedirects:          3,
		TLSConfig:             o.TLSConfig,
		ContextTimeoutEnabled: true,
	}
}
