package bench

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/limiter"
)

// BenchmarkClientCPU is a decision's cost in the client alone: redquota's
// Allow, redis_rate's Allow and a PING through a go-redis client at default
// options whose connections are answered from memory (memConn), so that no
// kernel, server or network time enters: ns/op is the library and go-redis
// CPU per call, which a loaded 2-core machine measures far more steadily
// than a round trip. cpu-ns/op is the process's user+sys time per call
// (getrusage), GC included. Each key of a set is seen once before the run;
// the contenders' order alternates between rounds (-count).
//
//	go test -run '^$' -bench ClientCPU -count 10 . | benchstat -col /lib -
func BenchmarkClientCPU(b *testing.B) {
	c := redis.NewClient(&redis.Options{Addr: "memory:6379", Dialer: func(context.Context, string, string) (net.Conn, error) {
		return &memConn{}, nil
	}})
	defer c.Close()
	rq := limiter.New(c, limiter.Options{Prefix: prefix("cpurq")})
	rr := redis_rate.NewLimiter(c)
	rrp := prefix("cpurr") + ":"
	rqL, rrL := limiter.PerSecond(Rate), redis_rate.PerSecond(Rate)
	libs := []struct {
		name string
		f    func(ctx context.Context, k string) error
	}{
		{"redquota", func(ctx context.Context, k string) error {
			_, err := rq.Allow(ctx, limiter.Key(k, rqL).Take(1))
			return err
		}},
		{"redis_rate", func(ctx context.Context, k string) error {
			_, err := rr.Allow(ctx, rrp+k, rrL)
			return err
		}},
		{"ping", func(ctx context.Context, _ string) error { return c.Ping(ctx).Err() }},
	}
	ctx := context.Background()
	for _, keys := range keySets {
		for _, k := range keys {
			for _, l := range libs {
				if err := l.f(ctx, k); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.Run("keys="+strconv.Itoa(len(keys)), func(b *testing.B) {
			order := slices.Clone(libs)
			if clientCPURound.Add(1)%2 == 0 {
				slices.Reverse(order)
			}
			for _, l := range order {
				b.Run("lib="+l.name, func(b *testing.B) {
					runtime.GC()
					b.ReportAllocs()
					cpu0 := cpuTime()
					n := 0
					for b.Loop() {
						if err := l.f(ctx, keys[n%len(keys)]); err != nil {
							b.Fatal(err)
						}
						n++
					}
					b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/op")
				})
			}
		})
	}
}

var clientCPURound atomic.Int64

// cpuTime is this process's user+sys CPU time so far, in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// memConn is a connection a Redis of memory answers at once: FCALL with
// redquota's plain reply (one integer), EVALSHA with redis_rate's (four
// values), PING, HELLO, and +OK to anything else (CLIENT SETINFO, the
// registry's SET). It reads only each command's name.
type memConn struct{ out bytes.Buffer }

func (c *memConn) Read(p []byte) (int, error) { return c.out.Read(p) }

func (c *memConn) Write(p []byte) (int, error) {
	// "*N\r\n$L\r\nNAME…": the name follows the second line end.
	i := bytes.IndexByte(p, '\n')
	name := p[i+1+bytes.IndexByte(p[i+1:], '\n')+1:]
	switch {
	case hasFold(name, "fcall"):
		c.out.WriteString(":1\r\n")
	case hasFold(name, "evalsha"):
		c.out.WriteString("*4\r\n:1\r\n:999999\r\n$2\r\n-1\r\n$5\r\n1e-06\r\n")
	case hasFold(name, "ping"):
		c.out.WriteString("+PONG\r\n")
	case hasFold(name, "hello"):
		c.out.WriteString("%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n")
	default: // one +OK per command (CLIENT SETINFO comes as a pipeline of 2)
		for range bytes.Count(p, []byte("\r\n*")) + 1 {
			c.out.WriteString("+OK\r\n")
		}
	}
	return len(p), nil
}

func hasFold(b []byte, s string) bool {
	return len(b) >= len(s) && bytes.EqualFold(b[:len(s)], []byte(s))
}

func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
