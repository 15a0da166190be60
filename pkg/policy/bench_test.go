package policy

import (
	"testing"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

// frameTypes are the class names a chat sends, unknown ones included, so
// both the hit and the default-class paths are measured.
var frameTypes = [][]byte{
	[]byte("message"), []byte("typing"), []byte("file"), []byte("message"),
	[]byte("typing"), []byte("presence"), []byte("message"), []byte("join"),
}

func benchTable(b testing.TB) *Table {
	doc, err := Parse(readExample(b))
	if err != nil {
		b.Fatal(err)
	}
	tab, err := Compile(doc)
	if err != nil {
		b.Fatal(err)
	}
	return tab
}

var sink limiter.Spec

// BenchmarkLookup is what the message path does per message: the class of
// the frame's type, then its connection bucket in the connection's tier
// (resolved once per connection).
func BenchmarkLookup(b *testing.B) {
	tab := benchTable(b)
	tier := tab.Tier("pro")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c := tier.Class(tab.ClassBytes(frameTypes[i&7]))
		if c != nil {
			sink = c.Specs[LayerConnection]
		}
	}
}

// BenchmarkLookupMapBaseline is what one would write without a Table: a
// map from tier and class name to the limits, looked up per message.
func BenchmarkLookupMapBaseline(b *testing.B) {
	tab := benchTable(b)
	type key struct{ tier, class string }
	m := map[key]ClassLimits{}
	for _, tn := range tab.TierNames() {
		for _, c := range tab.Tier(tn).Classes {
			m[key{tn, c.Name}] = c
		}
	}
	def := tab.Document().DefaultClass
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c, ok := m[key{"pro", string(frameTypes[i&7])}]
		if !ok {
			c = m[key{"pro", def}]
		}
		sink = c.Specs[LayerConnection]
	}
}

// BenchmarkLookupParallel is BenchmarkLookup from every core at once.
func BenchmarkLookupParallel(b *testing.B) {
	tab := benchTable(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		tier := tab.Tier("free")
		var s limiter.Spec
		for i := 0; pb.Next(); i++ {
			if c := tier.Class(tab.ClassBytes(frameTypes[i&7])); c != nil {
				s = c.Specs[LayerUser]
			}
		}
		_ = s
	})
}

func TestLookupAllocatesNothing(t *testing.T) {
	tab := benchTable(t)
	n := testing.AllocsPerRun(1000, func() {
		for _, ft := range frameTypes {
			tier := tab.Tier("pro")
			c := tier.Class(tab.ClassBytes(ft))
			sink = tab.Room("support-7").ClassSpec(tier, tab.Class(string(ft)))
			if c != nil {
				sink = c.Specs[LayerRoom]
			}
		}
	})
	if n != 0 {
		t.Fatalf("lookup allocates %v times per run", n)
	}
}
