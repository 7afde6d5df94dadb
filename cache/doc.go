// Package cache is a Redis cache for values that live milliseconds to days:
// typed values through a Codec, millisecond TTLs, batch reads and writes in one
// round trip, TTL-tagged sets invalidated by one script per slot, get-or-load with
// concurrent loads collapsed into one, and degradation that never makes a dead
// Redis the caller's problem.
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
//	<prefix>:{<group>}:t:<tag>      a tag set (SetTagged, InvalidateTags)
//	<prefix>:{<group>}:l:<key>      the tags a tagged value carries, expiring with it
//	<prefix>:{<group>}:i:<index>    an index of names (Remember, Recall)
//
// Tags are scoped to a group: a value and the tag sets that list it must sit in
// one slot for one script to write them all, so SetTagged and InvalidateTags need
// a group and return ErrNoGroup without one. Tags are exact: InvalidateTags
// deletes only values that carry a tag when it runs, because every write in a
// group (Set, SetMany, SetTagged, GetOrLoad, Delete) is one script call that
// also takes the value out of the tag sets of its previous write. Choose the group as the unit you
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
// the reply (see JSON.CopyStrings), so a ticker or an order book of string
// prices costs no allocation per string; a *[]byte destination always gets a
// copy of its own.
//
// # Degradation
//
// Every Redis call runs through a circuit breaker. A read that fails is a miss
// plus an error count (Get also returns the error; GetOrLoad goes on to load).
// After Options.Breaker.Failures consecutive failures the breaker opens and calls
// fail at once with ErrCircuitOpen, without touching the network, for
// Options.Breaker.CoolDown; then one probe call goes through and, if it succeeds,
// the breaker closes. Replies that Redis itself sends (a missing key, WRONGTYPE,
// NOSCRIPT) prove Redis is up and never count against it.
//
// # Near cache
//
// With Options.Near.MaxBytes set, a Cache keeps the values it reads in process
// and answers repeated reads without Redis (Get, GetMany, GetOrLoad; a hit
// into a *string allocates nothing). Redis tells it when a key changes
// (CLIENT TRACKING in broadcast mode on the value keys' prefix, one connection
// per node, every master of a cluster), its own writes drop their keys at once, and a value never
// outlives its Redis TTL. While any node's tracking connection is down every
// read goes to Redis; see NearOptions for the bounds, and Close.
//
// A Cache is safe for concurrent use.
package cache
