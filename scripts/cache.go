package scripts

// Cache scripts, used by package cache. Their keys are <prefix>:{<group>}:…: a
// value and the tag sets or index it belongs to share the group's hash tag.
var (
	// SetTagged writes values with one TTL and adds them to tag sets whose own
	// TTL covers their latest member. See cache_set_tagged.lua.
	SetTagged = mustScript("cache_set_tagged.lua")
	// InvalidateTag deletes a batch of a tag set's members, and the set once
	// empty. See cache_invalidate_tag.lua.
	InvalidateTag = mustScript("cache_invalidate_tag.lua")
	// IndexAdd remembers names in an index for at least a TTL. See cache_index_add.lua.
	IndexAdd = mustScript("cache_index_add.lua")
	// IndexList returns the names an index still remembers. See cache_index_list.lua.
	IndexList = mustScript("cache_index_list.lua")
	// Incr adds to a counter that expires one window after its first count.
	// See cache_incr.lua.
	Incr = mustScript("cache_incr.lua")
)
