package api

import (
	"strings"
	"testing"
	"time"
)

// TestMessageTextIsMeasuredEscaped checks that the text bound counts bytes
// as the providers' JSON carries them, so a text that only fits before
// escaping is refused at the API instead of failing on every device.
func TestMessageTextIsMeasuredEscaped(t *testing.T) {
	body := func(title string, data string) string {
		return `{"audience":{"all":true},"message":{"title":` + title + `,"data":{` + data + `}}}`
	}
	tests := []struct {
		name string
		give string
		want string // "" accepted
	}{
		{"plain at the bound", body(`"`+strings.Repeat("a", MaxTextBytes)+`"`, ""), ""},
		{"plain over the bound", body(`"`+strings.Repeat("a", MaxTextBytes+1)+`"`, ""), CodeInvalidMessage},
		{"3000 angle brackets", body(`"`+strings.Repeat("<", 3000)+`"`, ""), CodeInvalidMessage},
		{"512 angle brackets", body(`"`+strings.Repeat("<", 512)+`"`, ""), ""},
		{"quotes", body(`"`+strings.Repeat(`\"`, MaxTextBytes/2+1)+`"`, ""), CodeInvalidMessage},
		{"data counted with its punctuation", body(`"t"`, `"k":"`+strings.Repeat("v", MaxTextBytes-1-1-dataPairOverhead)+`"`), ""},
		{"data one over", body(`"t"`, `"k":"`+strings.Repeat("v", MaxTextBytes-1-1-dataPairOverhead+1)+`"`), CodeInvalidMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBroadcastRequest([]byte(tt.give), time.Hour)
			if got := CodeOf(err); got != tt.want {
				t.Errorf("code %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

func TestReservedDataKeys(t *testing.T) {
	tests := []struct {
		give     string
		reserved bool
	}{
		{"", true}, {"pushgate", true}, {"aps", true}, {"from", true}, {"message_type", true},
		{"notification", true}, {"gcm", true}, {"gcm.n.e", true}, {"gcmx", true}, {"google", true},
		{"google.c.a", true}, {"googleplay", true}, {"GOOGLE", true}, {"Gcm", true},
		{"url", false}, {"googl", false}, {"fromage", false}, {"a_gcm", false},
	}
	for _, tt := range tests {
		body := `{"audience":{"all":true},"message":{"title":"t","data":{"` + tt.give + `":"x"}}}`
		_, err := ParseBroadcastRequest([]byte(body), time.Hour)
		if got := err != nil; got != tt.reserved || got != (ReservedDataKey(tt.give) != "") {
			t.Errorf("data key %q: refused %t (%v), want %t", tt.give, got, err, tt.reserved)
		}
	}
}
