package wshandler

import (
	"bytes"
	"encoding/json"
	"testing"
)

// decodeSeeds are frames of every shape the fast decoder takes or hands
// over to encoding/json.
var decodeSeeds = []string{
	`{"type":"message","room":"r","data":{"t":1,"p":"x"}}`,
	`{"type":"join","room":"lobby","id":"7","name":"ann"}`,
	` { "type" : "message" , "room" : "r" , "data" : [1, "a\"]", {"b":[]}] } `,
	`{"type":"message","room":"r","data":"s\\\"}"}`,
	`{"type":"message","room":"r","data":-1.5e3}`,
	`{"type":"message","room":"r","data":null}`,
	`{"type":"message","room":"r","data":true,"id":"x"}`,
	`{"type":"a","type":"b","room":"r","room":"q"}`,
	`{"Type":"message","room":"r","data":1}`,
	`{"type":"message","room":"caf\u00e9","data":1}`,
	`{"type":"message","room":"café","data":1}`,
	`{"type":"join","room":"r","name":null}`,
	`{"type":5,"room":"r"}`,
	`{"type":"join","room":"r","extra":{"a":1}}`,
	`{"type":"message","room":"r","data":{}}x`,
	`{}`,
	`{"data":{"a":"}"},"type":"message","room":"r"}`,
	`{"type":"message","room":"r","data":[]}`,
}

// TestDecodeFrameFastMatchesJSON: on every frame the fast decoder takes,
// it gives what encoding/json gives; it takes the common frames.
func TestDecodeFrameFastMatchesJSON(t *testing.T) {
	took := 0
	for _, s := range decodeSeeds {
		if checkFastDecode(t, []byte(s)) {
			took++
		}
	}
	if took < 9 {
		t.Fatalf("the fast decoder took %d of the seed frames, want at least 9", took)
	}
	for _, s := range []string{decodeSeeds[0], decodeSeeds[1], decodeSeeds[2]} {
		if _, ok := decodeFrameFast([]byte(s)); !ok {
			t.Errorf("the fast decoder refused %s", s)
		}
	}
}

// FuzzDecodeFrameFast checks the fast decoder against encoding/json.
func FuzzDecodeFrameFast(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkFastDecode(t, b) })
}

// checkFastDecode fails t if the fast decoder takes b and disagrees with
// encoding/json on it, and reports whether it took b.
func checkFastDecode(t *testing.T, b []byte) bool {
	t.Helper()
	fast, ok := decodeFrameFast(b)
	if !ok {
		return false
	}
	var want frame
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("fast decoder took %q, encoding/json: %v", b, err)
	}
	same := fast.Type == want.Type && fast.Room == want.Room && fast.ID == want.ID &&
		bytes.Equal(fast.Data, want.Data) && (fast.Data == nil) == (want.Data == nil) &&
		(fast.Name == nil) == (want.Name == nil) && (fast.Name == nil || *fast.Name == *want.Name)
	if !same {
		t.Fatalf("%q: fast %+v, encoding/json %+v", b, fast, want)
	}
	return true
}

// TestDecodeFrameAllocs: decoding a room message costs two allocations at
// most (the room string and the returned frame).
func TestDecodeFrameAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not asserted under the race detector")
	}
	b := []byte(`{"type":"message","room":"lobby","data":{"text":"hello"}}`)
	if n := testing.AllocsPerRun(100, func() { _, _ = decodeFrame(b) }); n > 2 {
		t.Fatalf("%v allocations per decode, want at most 2", n)
	}
}
