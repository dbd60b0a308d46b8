package api

import (
	"encoding/json"
	"testing"
)

func TestParseRecallRequest(t *testing.T) {
	tests := []struct {
		give string
		want string // code, "" for accepted
	}{
		{`{"mode":"remove"}`, ""},
		{`{"mode":"replace","replacement":{"title":"Koreksi","body":"Abaikan."}}`, ""},
		{`{"mode":"replace"}`, CodeInvalidRecall},
		{`{"mode":"replace","replacement":{"title":"t","ttl":"1m"}}`, CodeInvalidRecall},
		{`{"mode":"replace","replacement":{}}`, CodeInvalidMessage},
		{`{"mode":"remove","replacement":{"title":"t"}}`, CodeInvalidRecall},
		{`{"mode":"erase"}`, CodeInvalidRecall},
		{`{"mode":"remove","x":1}`, CodeUnknownField},
		{`{"mode":"remove"}{}`, CodeMalformedJSON},
	}
	for _, tt := range tests {
		_, err := ParseRecallRequest([]byte(tt.give))
		if got := CodeOf(err); got != tt.want {
			t.Errorf("ParseRecallRequest(%s) = %v, want code %q", tt.give, err, tt.want)
		}
	}
}

// FuzzRecallRequest feeds arbitrary bodies to the recall parser: nothing
// panics, every refusal has a code in the table, and what it accepts is a
// remove without replacement or a replace with a valid one.
func FuzzRecallRequest(f *testing.F) {
	for _, seed := range []string{
		`{"mode":"remove"}`,
		`{"mode":"replace","replacement":{"title":"t","body":"b","data":{"k":"v"},"priority":"normal"}}`,
		`{"mode":"replace","replacement":{"title":"t","data":{"aps":"x"}}}`,
		`{"mode":"replace","replacement":null}`,
		`{"mode":"replace","replacement":{"title":"\xff"}}`,
		`null`, `[]`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRecallRequest(body)
		if err != nil {
			if _, _, ok := StatusOf(CodeOf(err)); !ok {
				t.Fatalf("refusal %v has no code in the table", err)
			}
			return
		}
		switch r.Mode {
		case RecallRemove:
			if r.Replacement != nil {
				t.Fatalf("accepted a remove with a replacement: %s", body)
			}
		case RecallReplace:
			if r.Replacement == nil || r.Replacement.TTL != "" || r.Replacement.Title == "" && r.Replacement.Body == "" {
				t.Fatalf("accepted a replace without a valid replacement: %s", body)
			}
		default:
			t.Fatalf("accepted mode %q", r.Mode)
		}
		// What the API accepts, a worker re-parsing the stored body accepts.
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseRecallRequest(again); err != nil {
			t.Fatalf("re-encoded %s refused: %v", again, err)
		}
	})
}
