package wshandler

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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
		"{\"type\":\"message\",\"room\":\"lobby\",\"data\":{\"text\":\"\xff\xfe\"}}",
		`{"type":"join","room":"lobby","name":" alice "}`,
		`{"type":"join","room":"lobby","name":"a\u202eb"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The handler refuses a frame that is not UTF-8 before decoding it
		// (1007); what it sends for any other frame must be UTF-8 JSON,
		// since browsers fail a connection on a text frame that is not.
		valid := utf8.Valid(b)
		fr, err := decodeFrame(b)
		if err != nil {
			if len(fr.ID) > maxRefLength {
				t.Fatalf("kept an id of %d bytes", len(fr.ID))
			}
			return
		}
		if fr.Type == "" || len(fr.ID) > maxRefLength {
			t.Fatalf("accepted %+v", fr)
		}
		_ = checkRoomName(fr.Room, DefaultMaxRoomNameLength)
		var nameJSON []byte
		if fr.Name != nil {
			if name, ok := checkJoinName(*fr.Name); ok {
				if n := utf8.RuneCountInString(name); n < 1 || n > MaxJoinNameRunes || name != strings.TrimSpace(name) {
					t.Fatalf("accepted name %q", name)
				}
				nameJSON = appendJSONString(nil, name)
			}
		}
		outs := [][]byte{
			replyFrame(TypeLeft, fr.Room, fr.ID),
			joinedFrame(appendJSONString(nil, fr.Room), appendJSONString(nil, "c-1"), nameJSON, fr.ID),
			appendErrorFrame(nil, errorInfo{code: CodeInvalidRoom, room: fr.Room, ref: fr.ID}),
		}
		if fr.Type == TypeMessage {
			outs = append(outs, messageFrame(appendJSONString(nil, fr.Room), appendJSONString(nil, "c-1"), nameJSON, fr.Data))
		}
		for _, out := range outs {
			if !json.Valid(out) {
				t.Fatalf("invalid frame %q", out)
			}
			if valid && !utf8.Valid(out) {
				t.Fatalf("frame %q from UTF-8 input is not UTF-8", out)
			}
		}
		if fr.Type == TypeMessage {
			out := messageFrame(appendJSONString(nil, fr.Room), appendJSONString(nil, "c-1"), nil, fr.Data)
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
