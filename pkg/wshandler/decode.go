package wshandler

import "encoding/json"

// decodeFrameFast decodes the common shape of a client frame without
// encoding/json's reflection: a valid JSON object whose keys are among
// type, room, id, name and data, spelt exactly so, whose string values are
// ASCII without escapes, and whose data is any JSON value. It reports
// false for anything else (another key, a key in other case, an escape, a
// non-ASCII or non-string value where a string belongs), which
// decodeFrame then hands to encoding/json; for the frames it accepts, it
// gives what json.Unmarshal gives (the last of duplicate keys wins; data
// aliases b).
func decodeFrameFast(b []byte) (frame, bool) {
	var f frame
	if !json.Valid(b) {
		return f, false
	}
	// b is one valid JSON value, so every structure below is well formed.
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return f, false
	}
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return f, false
	}
	for {
		ks, ke, ok := plainString(b, i)
		if !ok {
			return f, false
		}
		key := b[ks:ke]
		i = skipSpace(b, ke+1)
		i = skipSpace(b, i+1) // the colon
		if string(key) == "data" {
			end := valueEnd(b, i)
			f.Data = b[i:end:end]
			i = end
		} else {
			vs, ve, ok := plainString(b, i)
			if !ok {
				return f, false // null, a number, an escape: encoding/json decides
			}
			v := b[vs:ve]
			switch string(key) {
			case "type":
				f.Type = frameType(v)
			case "room":
				f.Room = string(v)
			case "id":
				f.ID = string(v)
			case "name":
				s := string(v)
				f.Name = &s
			default:
				return f, false
			}
			i = ve + 1
		}
		i = skipSpace(b, i)
		if b[i] == '}' {
			return f, true
		}
		i = skipSpace(b, i+1) // the comma
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// frameType returns the type v names, without allocating for the
// protocol's own types.
func frameType(v []byte) FrameType {
	switch string(v) {
	case string(TypeMessage):
		return TypeMessage
	case string(TypeJoin):
		return TypeJoin
	case string(TypeLeave):
		return TypeLeave
	}
	return FrameType(v)
}

// plainString returns the bounds of the contents of the string starting
// at b[i], which must be a quote (its closing quote is at end), if it is
// ASCII without escapes.
func plainString(b []byte, i int) (start, end int, ok bool) {
	if b[i] != '"' {
		return 0, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return i + 1, j, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// valueEnd returns the index just after the JSON value that starts at
// b[i]; b is valid JSON.
func valueEnd(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}
