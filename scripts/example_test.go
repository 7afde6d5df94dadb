package scripts_test

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/redquota/redquota/scripts"
)

// The embedded files: the scripts Redis runs, and the preludes (shared Lua
// functions, prepended to the scripts that use them), told apart by their
// headers' first line.
func Example() {
	names, _ := fs.Glob(scripts.FS, "*.lua")
	var run, preludes []string
	for _, name := range names {
		src, err := fs.ReadFile(scripts.FS, name)
		if err != nil {
			fmt.Println(err)
			return
		}
		first, _, _ := strings.Cut(string(src), "\n")
		if strings.Contains(first, "prelude (not a script)") {
			preludes = append(preludes, strings.TrimSuffix(name, ".lua"))
		} else {
			run = append(run, strings.TrimSuffix(name, ".lua"))
		}
	}
	fmt.Println("scripts:", strings.Join(run, " "))
	fmt.Println("preludes:", strings.Join(preludes, " "))
	// Output:
	// scripts: allow batch cache_delete cache_incr cache_index_add cache_index_list cache_invalidate_tag cache_set_tagged cancel decide hold inspect lease sync sync_lower wake
	// preludes: gcra giveback outside quota_charge quota_layout quota_time sliding_log state window_state
}
