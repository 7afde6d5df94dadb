// Package cache is a Redis cache for values that live milliseconds to days:
// typed values through a Codec, millisecond TTLs, batch reads and writes in one
// round trip, TTL-tagged sets invalidated by one script per slot, get-or-load with
// concurrent loads collapsed into one, and degradation that never makes a dead
// Redis the caller's problem.
//
// # Where to start
//
// Make a Cache with New (Options' zero value works) and use Set and Get: most
// callers need nothing else. GetOrLoad is the read-through form (a miss calls
// your load function once, however many callers miss together); GetMany and
// SetMany are the batch forms, one round trip each. Go methods cannot have
// type parameters, so the two typed reads, GetOrLoad and GetMany, are
// functions taking the Cache. Tags (the trailing arguments of Set, SetMany and
// GetOrLoad) and InvalidateTags need a group view: Group, or Options.Group.
// Stats and HealthCheck report; Close stops the near cache. Bad input is
// ErrInvalid, a codec's failure ErrCodec, Redis refusing the credentials
// ErrAuth, and an open circuit breaker ErrCircuitOpen.
//
// # Keys and groups
//
// A Cache made by New keeps each key in its own hash slot:
//
//	<prefix>:v:{<key>}
//
// which spreads keys over a cluster's masters. A group view, made by Group or by
// Options.Group, puts every key of the group in the group's slot:
//
//	<prefix>:v:{<group>}:<key>      a value
//	<prefix>:{<group>}:t:<tag>      a tag set (Set with tags, InvalidateTags)
//	<prefix>:{<group>}:l:<key>      the tags a tagged value carries, expiring with it
//	<prefix>:{<group>}:i:<index>    an index of names (package market's registry)
//
// Tags are scoped to a group: a value and the tag sets that list it must sit in
// one slot for one script to write them all, so tags and InvalidateTags need a
// group and return ErrInvalid without one. Tags are exact: InvalidateTags
// deletes only values that carry a tag when it runs, because every write in a
// group (Set, SetMany, GetOrLoad, Delete) is one script call that also takes
// the value out of the tag sets of its previous write. Choose the group as the unit you
// invalidate together and that is small enough for one Redis node: the market
// package uses the exchange. User-supplied parts are escaped, so '{', '}', ':' or
// '%' in a key can neither move it to another slot nor collide with another key.
// Values alone put their kind before the hash tag: every value key, and no
// other key (not a tag set's, nor a limiter's under the same prefix), starts
// with "<prefix>:v:{", the one prefix the near cache's tracking watches.
//
// # Decoding
//
// Get, GetMany and GetOrLoad decode the bytes Redis replied where they are,
// without a copy first. With the default JSON codec a decoded string refers to
// the reply (see Options.CopyStrings), so a ticker or an order book of string
// prices costs no allocation per string; a *[]byte destination always gets a
// copy of its own.
//
// # Degradation
//
// Every Redis call runs through a circuit breaker. A read that fails is a miss
// plus an error count (Get also returns the error; GetOrLoad goes on to load).
// After Options.BreakerFailures consecutive failures the breaker opens and
// calls fail at once with ErrCircuitOpen, without touching the network, for
// Options.BreakerCoolDown; then one probe call goes through and, if it
// succeeds, the breaker closes. Replies that Redis itself sends (a missing key, WRONGTYPE,
// NOSCRIPT) prove Redis is up and never count against it.
//
// # Near cache
//
// With Options.NearMaxBytes set, a Cache keeps the values it reads in process
// and answers repeated reads without Redis (Get, GetMany, GetOrLoad; a hit
// into a *string allocates nothing), until Redis reports that they changed.
// Redis sends that report before it answers the write, but each process reads
// it on its own: a read just after another process's write returned (even
// after this process saw that write's effect in Redis) can still get the old
// value until the report is read: about a network round trip, longer when
// the process is short of CPU (on a loaded 2-core machine, reads one or two
// writes behind, 5 to 10 ms apart, were seen). Where a read must see every write that
// finished before it, read with a Cache without a near cache.
//
// Invalidation uses Redis's client-side caching: one connection per Redis
// node (every master of a cluster, followed through failovers and slot moves)
// runs CLIENT TRACKING in broadcast mode on the prefix of the cache's value
// keys ("<prefix>:v:{"), over RESP3, and Redis pushes the name of every value
// that changes; a write of any other key (a tag set, an index, a limiter's
// under the same prefix) reaches no tracking connection. A value is kept no
// longer than its Redis TTL (read with PTTL in the same round trip as the
// value) nor Options.NearMaxTTL. While a tracking connection is down, and
// until every node has one again, nothing is served near: every read goes to
// Redis, and what the near cache held is dropped. A connection Redis closes
// (a restart, a failover, CLIENT KILL) is lost when its read fails; one whose
// node stops answering without closing it, after 3 s without a reply to the
// heartbeat PING sent every 500 ms: that is the longest a value changed in
// Redis can still be served near. Writes through this Cache drop their keys
// at once. The nodes are listed again every second (on a cluster, with
// CLUSTER SLOTS and CLUSTER NODES), so that a master that joins is tracked
// before slots move to it, and the new master of a failover soon after.
//
// A node without CLIENT TRACKING (Redis before 6, miniredis) leaves the near
// cache unused: reads go to Redis. The connections authenticate as the
// client's do (Username, Password, CredentialsProvider) and need HELLO,
// CLIENT TRACKING and PING. Call Close when done with a Cache that has a near
// cache: it stops them.
//
// A Cache is safe for concurrent use.
package cache
