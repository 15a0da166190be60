package limiter

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// TestKeyHasherEqualStringsHashAlike checks that the hash reads the bytes,
// not the pointer, at every length across the short and long paths.
func TestKeyHasherEqualStringsHashAlike(t *testing.T) {
	t.Parallel()
	k := newKeyHasher()
	for n := 0; n <= 40; n++ {
		a := strings.Repeat("x", n)
		b := string([]byte(a)) // same bytes, another array
		if k.id(a) != k.id(b) {
			t.Fatalf("length %d: equal strings hash apart", n)
		}
	}
}

// TestKeyHasherSpreads checks that IDs differing in one byte, at every
// position and length of the short path, spread over the bits the store
// uses: the low byte (the shard), bits 8 to 14 (the tag) and the high 32
// (the home slot). Each bucket count must stay within 6 standard
// deviations of a uniform draw's.
func TestKeyHasherSpreads(t *testing.T) {
	t.Parallel()
	k := newKeyHasher()
	const draws = 200_000
	var shard [256]int
	var tag [128]int
	var home [64]int
	for i := range draws {
		// Lengths 1 to 6, 8 to 13 and 16, every ID distinct.
		var id string
		switch i % 3 {
		case 0:
			id = fmt.Sprint(i)
		case 1:
			id = fmt.Sprintf("client-%d", i)
		default:
			id = fmt.Sprintf("user-%011d", i)
		}
		h := k.id(id)
		shard[h&0xff]++
		tag[tagOf(h)&0x7f]++
		home[(h>>32)*64>>32]++
	}
	check := func(name string, counts []int) {
		t.Helper()
		n := float64(len(counts))
		mean := draws / n
		sd := 6 * math.Sqrt(mean*(1-1/n))
		for i, c := range counts {
			if float64(c) < mean-sd || float64(c) > mean+sd {
				t.Fatalf("%s bucket %d holds %d of %d draws, expected %.0f±%.0f", name, i, c, draws, mean, sd)
			}
		}
	}
	check("shard", shard[:])
	check("tag", tag[:])
	check("home", home[:])
}
