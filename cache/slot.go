package cache

import "strings"

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
		var id any = hashTag(k)
		if c.masters != nil {
			id = slot(k)
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

// hashTag returns the part of key Redis Cluster hashes: the first non-empty
// {…}, or the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// slot returns the Redis Cluster hash slot of key.
func slot(key string) int {
	s := hashTag(key)
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % 16384)
}
