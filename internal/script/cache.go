package script

// Cache scripts, used by package cache. Their keys are <prefix>:{<group>}:…: a
// value and the tag sets or index it belongs to share the group's hash tag.
var (
	// SetTagged writes values of a group with one TTL and exactly the given
	// tags, leaving the tag sets of their previous writes. See cache_set_tagged.lua.
	SetTagged = mustScript("cache_set_tagged.lua")
	// Delete deletes values of a group and takes them out of their tag sets.
	// See cache_delete.lua.
	Delete = mustScript("cache_delete.lua")
	// InvalidateTag deletes a batch of the values that carry a tag, and the
	// tag set once empty. See cache_invalidate_tag.lua.
	InvalidateTag = mustScript("cache_invalidate_tag.lua")
	// IndexAdd remembers names in an index for at least a TTL. See cache_index_add.lua.
	IndexAdd = mustScript("cache_index_add.lua")
	// IndexList returns the names an index still remembers. See cache_index_list.lua.
	IndexList = mustScript("cache_index_list.lua")
	// Incr adds to a counter that expires one window after its first count.
	// See cache_incr.lua.
	Incr = mustScript("cache_incr.lua")
)
