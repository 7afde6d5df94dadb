package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ResetStats clears the server's command statistics (CONFIG RESETSTAT).
func ResetStats(ctx context.Context, c *redis.Client) error {
	return c.ConfigResetStat(ctx).Err()
}

// CommandStat is one command's line of INFO commandstats.
type CommandStat struct {
	Calls int64
	Usec  int64
}

// CommandStats reads INFO commandstats, by command name ("evalsha",
// "config|resetstat", …).
func CommandStats(ctx context.Context, c *redis.Client) (map[string]CommandStat, error) {
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]CommandStat)
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		var st CommandStat
		for _, f := range strings.Split(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				st.Calls = n
			case "usec":
				st.Usec = n
			}
		}
		out[name] = st
	}
	return out, nil
}

// TopLevel sums the calls and usec of the commands a contender sends itself
// (not those its scripts run: INFO commandstats counts a script's inner
// redis.call commands under their own names as well as inside the script's
// usec). inner says, per script command, which inner commands each call of
// it runs that also appear among commands; those are subtracted, their usec
// in proportion to their calls.
func TopLevel(st map[string]CommandStat, commands []string, inner map[string]map[string]int) (usec, calls float64) {
	for _, name := range commands {
		s := st[name]
		c, u := float64(s.Calls), float64(s.Usec)
		var in float64
		for script, cmds := range inner {
			in += float64(st[script].Calls) * float64(cmds[name])
		}
		if in > 0 && c > 0 {
			top := max(c-in, 0)
			u *= top / c
			c = top
		}
		usec += u
		calls += c
	}
	return usec, calls
}

// CPUTime is the user plus system CPU time the server process has used, from
// /proc (Linux only; clock-tick resolution, 10 ms).
func (s *Server) CPUTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(s.cmd.Process.Pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: malformed /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14, utime
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15, stime
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: malformed /proc stat")
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticksPerSecond, nil
}
