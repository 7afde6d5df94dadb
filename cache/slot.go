package cache

import "github.com/redquota/redquota/internal/keys"

// bySlot groups the indexes of Redis keys ks so that each group can be one
// multi-key command: by hash slot on a cluster, by hash tag on a Ring (which
// places keys by tag), and all together on a single node.
func (c *core) bySlot(ks []string) [][]int {
	all := func() [][]int {
		idx := make([]int, len(ks))
		for i := range idx {
			idx[i] = i
		}
		return [][]int{idx}
	}
	if len(ks) == 0 {
		return nil
	}
	if c.masters == nil && c.shards == nil {
		return all()
	}
	var out [][]int
	seen := map[any]int{}
	for i, k := range ks {
		var id any = keys.HashTag(k)
		if c.masters != nil {
			id = keys.Slot(k)
		}
		j, ok := seen[id]
		if !ok {
			j = len(out)
			seen[id] = j
			out = append(out, nil)
		}
		out[j] = append(out[j], i)
	}
	return out
}
