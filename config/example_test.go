package config_test

import (
	"errors"
	"fmt"

	"github.com/redquota/redquota/config"
)

// Parse reads the variables through any lookup function (os.LookupEnv in a
// program: FromEnv): here a map, as a test would.
func ExampleParse() {
	env := map[string]string{
		"REDIS_URL":            "redis://app:s3cret@10.0.0.5:6380/2",
		"REDIS_SOCKET_TIMEOUT": "0.5",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := config.Parse(lookup)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Addrs, cfg.DB, cfg.Username, cfg.SocketTimeout, cfg.Cluster)

	// Several URLs make a cluster client.
	env["REDIS_URL"] = "redis://10.0.0.1:7000,redis://10.0.0.2:7000"
	cfg, _ = config.Parse(lookup)
	fmt.Println(cfg.Addrs, cfg.Cluster)

	// A malformed value names the variable, never the password.
	env["REDIS_URL"] = "redis://app:s3cret@10.0.0.5:99999"
	_, err = config.Parse(lookup)
	fmt.Println(err, errors.Is(err, config.ErrInvalid))
	// Output:
	// [10.0.0.5:6380] 2 app 500ms false
	// [10.0.0.1:7000 10.0.0.2:7000] true
	// config: invalid Redis configuration: REDIS_URL has a bad port true
}
