package api

import (
	"strings"
	"testing"
	"time"
)

// TestBodiesAreUnambiguous checks that a body two JSON parsers could read
// differently is refused: repeated keys (encoding/json keeps the last,
// others the first) and field names in another case (encoding/json
// matches them, others do not), with the member named.
func TestBodiesAreUnambiguous(t *testing.T) {
	tests := []struct {
		name     string
		give     string
		wantCode string
		wantIn   string
	}{
		{"plain", `{"audience":{"topic":"citizens"},"message":{"title":"t","data":{"a":"1","A":"2"}}}`, "", ""},
		{"repeated title", `{"audience":{"topic":"citizens"},"message":{"title":"Drill","title":"EVACUATE NOW"}}`,
			CodeDuplicateKey, "message.title"},
		{"repeated audience", `{"audience":{"topic":"citizens"},"audience":{"all":true},"message":{"title":"t"}}`,
			CodeDuplicateKey, "audience"},
		{"repeated data key", `{"audience":{"topic":"citizens"},"message":{"title":"t","data":{"url":"a","url":"b"}}}`,
			CodeDuplicateKey, `message.data["url"]`},
		{"repeated token field", `{"audience":{"tokens":[{"platform":"fcm","token":"a"},{"platform":"fcm","token":"b","token":"c"}]},"message":{"title":"t"}}`,
			CodeDuplicateKey, "audience.tokens[1].token"},
		{"field in upper case", `{"audience":{"topic":"citizens"},"message":{"title":"t","TITLE":"u"}}`,
			CodeUnknownField, "message.TITLE"},
		{"field in title case", `{"Audience":{"topic":"citizens"},"message":{"title":"t"}}`,
			CodeUnknownField, "Audience"},
		{"escaped duplicate", `{"audience":{"topic":"citizens"},"message":{"title":"t","titl\u0065":"u"}}`,
			CodeDuplicateKey, "message.title"},
		{"malformed", `{"audience":`, CodeMalformedJSON, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBroadcastRequest([]byte(tt.give), time.Hour)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if CodeOf(err) != tt.wantCode || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("err = %v; want %s naming %s", err, tt.wantCode, tt.wantIn)
			}
		})
	}
}

func TestRecallBodiesAreUnambiguous(t *testing.T) {
	_, err := ParseRecallRequest([]byte(`{"mode":"replace","replacement":{"title":"a","body":"b","body":"c"}}`))
	if CodeOf(err) != CodeDuplicateKey || !strings.Contains(err.Error(), "replacement.body") {
		t.Errorf("err = %v; want %s naming replacement.body", err, CodeDuplicateKey)
	}
}
