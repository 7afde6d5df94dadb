// Package scripts holds every Lua script redquota runs, as *.lua files beside
// this one: the single source of truth. Its Go API is the embedded files;
// the handles that run them (and their argument layouts) are internal to the
// module.
//
// Every script follows one contract: the clock is Redis TIME read inside the
// script, integers cross the boundary in µs or ms, every key written gets a
// TTL, and all keys of one call share a hash tag, so one slot. Each script's
// header gives its KEYS, ARGV and reply. A file whose header says "prelude"
// is not a script: it holds Lua functions several scripts share (Redis cannot
// import), and is prepended to each script that uses it.
package scripts

import "embed"

// FS holds every script and prelude, by file name (quota_decide.lua …).
//
//go:embed *.lua
var FS embed.FS
