package script

import (
	"crypto/sha1"
	"encoding/hex"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/scripts"
)

// The decision scripts also come as one Redis function library (Redis ≥ 7.0:
// FUNCTION LOAD, then FCALL): the same files, each script's body the body of
// a registered function, the preludes once at the library's top. Redis runs a
// library's top once, at load, where EVALSHA runs a script's preludes (some
// thirty Lua function definitions for decide.lua) at every call: an FCALL of
// allow.lua costs the server about a tenth fewer instructions than its
// EVALSHA, a quota's decision more (BENCHMARKS.md). The library's name and
// its functions' names carry a hash of its text, so processes running
// different versions never call each other's functions.
var (
	library   string
	functions = map[*redis.Script]string{}
)

// libScripts are the scripts of the library: the limiter's decisions, sent
// by reach.Eval.
var libScripts = []struct {
	s    **redis.Script
	file string
}{{&Decide, "decide.lua"}, {&Lease, "lease.lua"}, {&Wake, "wake.lua"}, {&Allow, "allow.lua"}, {&Batch, "batch.lua"}}

// libPreludes are every prelude of libScripts, in an order each builds on
// those before it (their function names are distinct: TestLibrary).
var libPreludes = append(append([]string{}, quotaAll...), "giveback.lua")

func init() {
	var b strings.Builder
	// Preludes read KEYS and ARGV too: at a script's top they are globals,
	// here upvalues each function sets before its body runs (Redis runs one
	// function at a time).
	b.WriteString("local KEYS, ARGV\n")
	for _, f := range libPreludes {
		b.Write(mustRead(f))
	}
	for _, ls := range libScripts {
		name := strings.TrimSuffix(ls.file, ".lua")
		b.WriteString("redis.register_function('rq_VERSION_" + name + "', function(keys, args)\nKEYS, ARGV = keys, args\n")
		b.Write(mustRead(ls.file))
		b.WriteString("end)\n")
	}
	sum := sha1.Sum([]byte(b.String()))
	version := hex.EncodeToString(sum[:6])
	library = "#!lua name=redquota_" + version + "\n" + strings.ReplaceAll(b.String(), "rq_VERSION_", "rq_"+version+"_")
	for _, ls := range libScripts {
		functions[*ls.s] = "rq_" + version + "_" + strings.TrimSuffix(ls.file, ".lua")
	}
}

// Library returns the source of the function library (FUNCTION LOAD's
// argument).
func Library() string { return library }

// Function returns the name of s's function in the library (FCALL's first
// argument), or "" when s is not in the library.
func Function(s *redis.Script) string { return functions[s] }

func mustRead(f string) []byte {
	b, err := scripts.FS.ReadFile(f)
	if err != nil {
		panic("script: missing embedded " + f) // a build defect, not user input
	}
	return b
}
