package script

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The library holds each decision script as a function, and the preludes of
// them all once: a prelude function defined twice would silently give some
// script the other one.
func TestLibrary(t *testing.T) {
	seen := map[string]string{}
	def := regexp.MustCompile(`(?m)^local function (\w+)`)
	for _, f := range libPreludes {
		for _, m := range def.FindAllStringSubmatch(string(mustRead(f)), -1) {
			if prev, ok := seen[m[1]]; ok {
				t.Errorf("%s defines %s, as %s does", f, m[1], prev)
			}
			seen[m[1]] = f
		}
	}
	for _, ls := range libScripts {
		name := Function(*ls.s)
		if name == "" || !strings.Contains(library, "redis.register_function('"+name+"'") {
			t.Errorf("%s: no function %q in the library", ls.file, name)
		}
		// Each of its preludes is in the library.
		for _, p := range preludes[*ls.s] {
			if !slices.Contains(libPreludes, p) {
				t.Errorf("%s: prelude %s is not in the library", ls.file, p)
			}
		}
	}
	if Function(Hold) != "" {
		t.Error("hold.lua is not in the library")
	}
}
