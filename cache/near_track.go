package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The near cache's tracking connections. go-redis's own client-side cache
// (Options.ClientSideCache) tracks the keys each pooled connection reads and
// works on a single node only; the cache is handed a client already made, so
// it opens connections of its own instead: one per node, RESP3, CLIENT
// TRACKING ON BCAST PREFIX "<prefix>:v:{" (the values' keys alone), reading nothing but Redis's
// invalidation pushes and the replies to its heartbeat PINGs.
const (
	// trackTopologyEvery is how often the nodes are listed again (a cluster's
	// masters change with failovers and slot moves).
	trackTopologyEvery = time.Second
	// trackHeartbeat is how often a tracking connection PINGs its node;
	// trackSilence is how long it may go without reading anything before it is
	// taken as lost. That is the bound on how long a node that stops answering
	// without closing the connection can leave a changed value served near.
	trackHeartbeat = 500 * time.Millisecond
	trackSilence   = 3 * time.Second
	// trackDialTimeout bounds dialing and the handshake of a connection.
	trackDialTimeout = 2 * time.Second
	// trackRetryMax is the longest wait between attempts to (re)connect.
	trackRetryMax = 2 * time.Second
)

// errNoNodes is the error of a client whose nodes cannot be listed.
var errNoNodes = errors.New("cache: near cache: client has no nodes to track")

// tracking keeps one tracking connection per node and the near cache's epoch
// ready while all of them are live.
type tracking struct {
	n      *near
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}
	name   string // CLIENT SETNAME of the connections

	cluster interface {
		MasterForKey(ctx context.Context, key string) (*redis.Client, error)
	}

	mu    sync.Mutex
	conns map[string]*trackConn // by node address
	ready bool

	// onInvalidate, set by tests, sees each key Redis reports, after it was dropped.
	onInvalidate atomic.Pointer[func(k string)]
}

// trackConn is the tracking connection of one node.
type trackConn struct {
	addr string
	opt  *redis.Options
	live bool
	stop context.CancelFunc
}

func newTracking(n *near) *tracking {
	t := &tracking{n: n, kick: make(chan struct{}, 1), conns: map[string]*trackConn{},
		name: "redquota-near-" + clientNameSafe(n.c.prefix)}
	if cc, ok := n.c.client.(*redis.ClusterClient); ok {
		t.cluster = cc
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(1)
	go t.run()
	return t
}

// clientNameSafe replaces what CLIENT SETNAME refuses (spaces, control and
// non-ASCII bytes).
func clientNameSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c <= ' ' || c > '~' {
			b[i] = '_'
		}
	}
	return string(b)
}

func (t *tracking) close() {
	t.cancel()
	t.wg.Wait()
}

// run lists the nodes now, every trackTopologyEvery, and when kicked, and
// keeps a connection on each.
func (t *tracking) run() {
	defer t.wg.Done()
	tick := time.NewTicker(trackTopologyEvery)
	defer tick.Stop()
	for {
		t.refresh()
		select {
		case <-t.ctx.Done():
			t.mu.Lock()
			for _, tc := range t.conns {
				tc.stop()
			}
			t.mu.Unlock()
			return
		case <-tick.C:
		case <-t.kick:
		}
	}
}

// refresh starts connections to new nodes and stops those of nodes gone.
func (t *tracking) refresh() {
	ctx, cancel := context.WithTimeout(t.ctx, trackDialTimeout)
	nodes, err := t.nodes(ctx)
	cancel()
	if err != nil {
		return // the connections of nodes that went fail on their own
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	changed := false
	for addr, opt := range nodes {
		if _, ok := t.conns[addr]; ok {
			continue
		}
		ctx, stop := context.WithCancel(t.ctx)
		tc := &trackConn{addr: addr, opt: opt, stop: stop}
		t.conns[addr] = tc
		changed = true
		t.wg.Add(1)
		go t.serve(ctx, tc)
	}
	for addr, tc := range t.conns {
		if _, ok := nodes[addr]; !ok {
			tc.stop()
			delete(t.conns, addr)
			changed = true
		}
	}
	if changed {
		t.update()
	}
}

// nodes returns the options of every master of a cluster, every shard of a
// Ring, or of the client, by address. On a cluster it adds the masters that
// CLUSTER NODES lists without slots yet: a node that joins is tracked before
// slots can move to it.
func (t *tracking) nodes(ctx context.Context) (map[string]*redis.Options, error) {
	out := map[string]*redis.Options{}
	var mu sync.Mutex
	add := func(_ context.Context, c *redis.Client) error {
		o := c.Options()
		mu.Lock()
		out[o.Addr] = o
		mu.Unlock()
		return nil
	}
	var err error
	switch c := t.n.c; {
	case c.masters != nil:
		if err = c.masters.ForEachMaster(ctx, add); err == nil && t.cluster != nil {
			err = t.joinedMasters(ctx, out)
		}
	case c.shards != nil:
		err = c.shards.ForEachShard(ctx, add)
	default:
		rc, ok := c.client.(*redis.Client)
		if !ok {
			return nil, errNoNodes
		}
		err = add(ctx, rc)
	}
	if err == nil && len(out) == 0 {
		err = errNoNodes
	}
	return out, err
}

// joinedMasters adds to out the masters CLUSTER NODES lists that out lacks
// (those without slots), with the options of one already there.
func (t *tracking) joinedMasters(ctx context.Context, out map[string]*redis.Options) error {
	cc, ok := t.cluster.(*redis.ClusterClient)
	if !ok || len(out) == 0 {
		return nil
	}
	text, err := cc.ClusterNodes(ctx).Result()
	if err != nil {
		return err
	}
	var like *redis.Options
	for _, o := range out {
		like = o
		break
	}
	for _, line := range strings.Split(text, "\n") {
		// <id> <ip:port@cport[,hostname]> <flags> <master> …
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		flags := "," + f[2] + ","
		if !strings.Contains(flags, ",master,") || strings.Contains(flags, ",fail,") ||
			strings.Contains(flags, ",handshake,") || strings.Contains(flags, ",noaddr,") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		if _, ok := out[addr]; ok || strings.HasPrefix(addr, ":") {
			continue
		}
		o := *like
		o.Addr = addr
		out[addr] = &o
	}
	return nil
}

// update recomputes readiness and moves the epoch. Called with mu held.
func (t *tracking) update() {
	ready := len(t.conns) > 0
	for _, tc := range t.conns {
		ready = ready && tc.live
	}
	t.ready = ready
	t.n.bump(ready)
}

// setLive records that tc's tracking is on (live) or lost.
func (t *tracking) setLive(tc *trackConn, live bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns[tc.addr] != tc || tc.live == live {
		return
	}
	tc.live = live
	t.update()
}

// flushed drops everything after Redis reported a FLUSHDB or FLUSHALL.
func (t *tracking) flushed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n.bump(t.ready)
}

// covers reports whether the node that holds Redis key k has a live
// tracking connection. On a cluster a read can reach a master the near cache
// does not track yet (a slot moved to a new node): its value is not kept, and
// the nodes are listed again.
func (t *tracking) covers(ctx context.Context, k string) bool {
	if t.cluster == nil {
		return true
	}
	m, err := t.cluster.MasterForKey(ctx, k)
	if err != nil {
		return false
	}
	t.mu.Lock()
	tc := t.conns[m.Options().Addr]
	ok := tc != nil && tc.live
	t.mu.Unlock()
	if !ok {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
	return ok
}

// serve keeps tc connected until ctx ends.
func (t *tracking) serve(ctx context.Context, tc *trackConn) {
	defer t.wg.Done()
	wait := 50 * time.Millisecond
	for ctx.Err() == nil {
		wasLive, _ := t.session(ctx, tc)
		t.setLive(tc, false)
		if wasLive {
			wait = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, trackRetryMax)
	}
}

// session runs one tracking connection: dial, HELLO 3, CLIENT TRACKING, then
// invalidations until the connection fails or ctx ends.
func (t *tracking) session(ctx context.Context, tc *trackConn) (wasLive bool, err error) {
	opt := tc.opt
	dctx, cancel := context.WithTimeout(ctx, trackDialTimeout)
	defer cancel()
	var conn net.Conn
	if opt.Dialer != nil {
		conn, err = opt.Dialer(dctx, opt.Network, opt.Addr)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(dctx, "tcp", opt.Addr)
	}
	if err != nil {
		return false, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	rd := bufio.NewReader(conn)

	user, pass := opt.Username, opt.Password
	switch {
	case opt.CredentialsProviderContext != nil:
		if user, pass, err = opt.CredentialsProviderContext(dctx); err != nil {
			return false, err
		}
	case opt.CredentialsProvider != nil:
		user, pass = opt.CredentialsProvider()
	}
	hello := []string{"HELLO", "3"}
	if pass != "" {
		if user == "" {
			user = "default"
		}
		hello = append(hello, "AUTH", user, pass)
	}
	hello = append(hello, "SETNAME", t.name)
	deadline, _ := dctx.Deadline()
	_ = conn.SetDeadline(deadline)
	for _, cmd := range [][]string{hello, {"CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", t.n.root}} {
		if _, err := conn.Write(respCommand(cmd...)); err != nil {
			return false, err
		}
		v, err := readResp(rd)
		if err != nil {
			return false, err
		}
		if v.kind == '-' {
			return false, fmt.Errorf("cache: near cache: %s: %s", cmd[0], v.str)
		}
	}
	_ = conn.SetDeadline(time.Time{})
	t.setLive(tc, true)

	// The heartbeat makes the node answer at least every trackHeartbeat, so a
	// read that waits trackSilence for anything finds a dead node.
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(trackHeartbeat)
		defer tick.Stop()
		ping := respCommand("PING")
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				_ = conn.SetWriteDeadline(time.Now().Add(trackSilence))
				if _, err := conn.Write(ping); err != nil {
					conn.Close()
					return
				}
			}
		}
	}()
	for {
		_ = conn.SetReadDeadline(time.Now().Add(trackSilence))
		v, err := readResp(rd)
		if err != nil {
			return true, err
		}
		if v.kind != '>' || len(v.arr) < 2 || v.arr[0].str != "invalidate" {
			continue // a PONG, or a push of another kind
		}
		if v.arr[1].null {
			t.flushed()
			continue
		}
		for _, k := range v.arr[1].arr {
			t.n.invalidate(k.str)
			if f := t.onInvalidate.Load(); f != nil {
				(*f)(k.str)
			}
		}
	}
}

// respCommand encodes a command as a RESP array of bulk strings.
func respCommand(args ...string) []byte {
	b := make([]byte, 0, 64)
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

// respValue is a RESP3 value as the tracking connection needs it: a kind (the
// type byte), a string (simple, bulk, error, number as text), or elements
// (array, push, set; a map as key, value, key, value…).
type respValue struct {
	kind byte
	str  string
	arr  []respValue
	null bool
}

// respMaxLen bounds a length a node announces, against a corrupt stream.
const respMaxLen = 512 << 20

// readResp reads one RESP3 value; an attribute before a value is skipped.
func readResp(rd *bufio.Reader) (respValue, error) {
	line, err := rd.ReadSlice('\n')
	if err != nil {
		return respValue{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return respValue{}, fmt.Errorf("cache: near cache: bad RESP line %q", line)
	}
	v := respValue{kind: line[0]}
	body := string(line[1 : len(line)-2])
	switch v.kind {
	case '+', '-', ':', ',', '#', '(':
		v.str = body
		return v, nil
	case '_':
		v.null = true
		return v, nil
	}
	n, err := strconv.Atoi(body)
	if err != nil || n > respMaxLen {
		return respValue{}, fmt.Errorf("cache: near cache: bad RESP length %q", body)
	}
	if n < 0 {
		v.null = true
		return v, nil
	}
	switch v.kind {
	case '$', '=', '!':
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return respValue{}, err
		}
		v.str = string(buf[:n])
		return v, nil
	case '%', '|':
		n *= 2
	case '*', '>', '~':
	default:
		return respValue{}, fmt.Errorf("cache: near cache: unknown RESP type %q", v.kind)
	}
	v.arr = make([]respValue, 0, min(n, 1024))
	for range n {
		e, err := readResp(rd)
		if err != nil {
			return respValue{}, err
		}
		v.arr = append(v.arr, e)
	}
	if v.kind == '|' {
		return readResp(rd) // an attribute annotates the value that follows
	}
	return v, nil
}
