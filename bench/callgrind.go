package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Callgrind is a redis-server run under valgrind's callgrind (apt-get install
// valgrind), whose instruction count can be read at any moment: instruction
// counts are repeatable on a noisy machine where wall-clock times are not.
type Callgrind struct {
	*Server
	dir, pid string
	dumps    int
}

// StartCallgrind starts redis-server under callgrind, with hz 1 and no
// dynamic-hz so that the server's own periodic work, which a measure
// subtracts as idle, is small.
func StartCallgrind() (*Callgrind, error) {
	if _, err := exec.LookPath("valgrind"); err != nil {
		return nil, fmt.Errorf("valgrind not found (Debian package valgrind): %w", err)
	}
	dir, err := os.MkdirTemp("", "redquota-callgrind-")
	if err != nil {
		return nil, err
	}
	srv, err := StartServerUnder("valgrind", "--tool=callgrind", "--callgrind-out-file="+filepath.Join(dir, "cg.out"))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("redis-server under callgrind: %w", err)
	}
	cg := &Callgrind{Server: srv, dir: dir}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer c.Close()
	ctx := context.Background()
	for _, kv := range [][2]string{{"dynamic-hz", "no"}, {"hz", "1"}} {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			cg.Close()
			return nil, err
		}
	}
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		cg.Close()
		return nil, err
	}
	cg.pid = Field(info, "process_id")
	return cg, nil
}

// Dump returns the server's instructions since the last Dump (or the start).
func (cg *Callgrind) Dump() (float64, error) {
	cg.dumps++
	if b, err := exec.Command("callgrind_control", "-d", cg.pid).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("callgrind_control: %v: %s", err, b)
	}
	b, err := os.ReadFile(fmt.Sprintf("%s.%d", filepath.Join(cg.dir, "cg.out"), cg.dumps))
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(Field(string(b), "summary"), 64)
}

// IdleRate returns the idle server's instructions per second, over d.
func (cg *Callgrind) IdleRate(d time.Duration) (float64, error) {
	if _, err := cg.Dump(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	time.Sleep(d)
	n, err := cg.Dump()
	return n / time.Since(t0).Seconds(), err
}

// Close stops the server and removes its dumps.
func (cg *Callgrind) Close() {
	cg.Server.Close()
	_ = os.RemoveAll(cg.dir)
}

// Field returns the value of "k:value" among s's lines (INFO's format, and
// callgrind's dump header), or "".
func Field(s, k string) string {
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), k+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
