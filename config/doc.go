// Package config builds a go-redis client from the environment: REDIS_URL, or
// the variables the original system used (REDIS_HOST, REDIS_PORT,
// REDIS_PASSWORD, REDIS_DB, REDIS_MAX_CONNECTIONS, REDIS_SOCKET_TIMEOUT),
// with REDIS_CLUSTER and REDIS_TLS_CA_FILE.
//
// Most callers should use FromEnv and Config.NewClient:
//
//	cfg, err := config.FromEnv()
//	if err != nil {
//		return err // wraps ErrInvalid and names the variable
//	}
//	rdb := cfg.NewClient() // a *redis.Client, or a *redis.ClusterClient
//
// Parse reads from any lookup function (a map in tests); Config.Options gives
// the single-node client options to adjust before building a client by hand.
//
// Timeouts, pool size and retries are always set explicitly, never left to
// go-redis defaults (which changed in 9.22). Errors name the variable that is
// wrong and never echo a password.
package config
