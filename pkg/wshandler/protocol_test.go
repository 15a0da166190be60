package wshandler

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/limiter"
)

func TestAppendJSONString(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", `q"uo\te`, "ctl\x00\x1f\n", "ñ🎉", "bad\xffutf8", "sep\u2028\u2029", "<&>"} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("%q encoded as %s: %v", s, b, err)
			continue
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if got != want {
			t.Errorf("%q round-tripped as %q", s, got)
		}
	}
}

func TestErrorFrame(t *testing.T) {
	t.Parallel()
	d := limiter.Decision{Reason: limiter.ReasonRateLimitExceeded, RetryAfter: 1500*time.Millisecond + 1, Limit: 10}
	e := errorFromDecision(d)
	e.room, e.ref = "lobby", "m1"
	got := string(appendErrorFrame(nil, e))
	want := `{"type":"error","error":"rate_limit_exceeded","room":"lobby","id":"m1","retry_after_ms":1501,"limit":10}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	never := string(appendErrorFrame(nil, errorInfo{code: "x", retry: limiter.Never}))
	if never != `{"type":"error","error":"x"}` {
		t.Errorf("Never: %s", never)
	}
}

// FuzzDecodeFrame: decoding never panics, and a frame that decodes yields
// outgoing frames that are valid JSON and carry its room and data.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"join","room":"lobby"}`,
		`{"type":"message","room":"lobby","data":{"text":"hi"},"id":"1"}`,
		`{"type":"leave","room":"a.b.*>"}`,
		`not json`, `{"type":5}`, `{"type":"message","room":"x","data":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		if fr.Type == "" || len(fr.ID) > maxRefLength {
			t.Fatalf("accepted %+v", fr)
		}
		_ = checkRoomName(fr.Room, DefaultMaxRoomNameLength)
		for _, out := range [][]byte{
			replyFrame(TypeJoined, fr.Room, fr.ID),
			appendErrorFrame(nil, errorInfo{code: CodeInvalidRoom, room: fr.Room, ref: fr.ID}),
		} {
			if !json.Valid(out) {
				t.Fatalf("invalid frame %q", out)
			}
		}
		if fr.Type == TypeMessage {
			out := messageFrame(appendJSONString(nil, fr.Room), appendJSONString(nil, "c-1"), fr.Data)
			var back struct {
				Room string          `json:"room"`
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatalf("message frame %q: %v", out, err)
			}
			if back.Room != fr.Room {
				t.Fatalf("room %q came back as %q", fr.Room, back.Room)
			}
		}
	})
}
