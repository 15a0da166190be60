package policy

import (
	"reflect"
	"sort"

	"go.yaml.in/yaml/v3"
)

// Diff returns the paths at which b differs from a, sorted: the deepest
// path whose value changed, or the path of a whole section added or
// removed ("tiers.gold" for a new tier). A nil document is the empty one.
func Diff(a, b *Document) []string {
	ta, tb := tree(a), tree(b)
	var out []string
	diffTree(ta, tb, "", &out)
	sort.Strings(out)
	return out
}

// tree returns the document as the generic tree of its YAML form, so that
// paths are the document's keys.
func tree(d *Document) any {
	if d == nil {
		d = &Document{}
	}
	b, err := yaml.Marshal(d)
	if err != nil {
		return nil
	}
	var t any
	if yaml.Unmarshal(b, &t) != nil {
		return nil
	}
	return t
}

func diffTree(a, b any, path string, out *[]string) {
	ma, okA := a.(map[string]any)
	mb, okB := b.(map[string]any)
	if !okA || !okB {
		if !reflect.DeepEqual(a, b) {
			if path == "" {
				path = "."
			}
			*out = append(*out, path)
		}
		return
	}
	for k, va := range ma {
		vb, ok := mb[k]
		if !ok {
			*out = append(*out, join(path, k))
			continue
		}
		diffTree(va, vb, join(path, k), out)
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			*out = append(*out, join(path, k))
		}
	}
}
