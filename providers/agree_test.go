package providers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
)

// agreeToken is longer than any FCM registration token seen (about 160
// bytes): FCM counts the token against MaxPayload, APNs does not.
var agreeToken = strings.Repeat("t", 256)

// messageOf builds what a worker sends for an accepted broadcast body, as
// queue/verify.go does, with an id of the real length.
func messageOf(spec *api.MessageSpec, ttl time.Duration) *Message {
	const id = "b0123456789abcdefghijklmn" // "b" + 24 of base32hex, as queue.BroadcastID
	priority := PriorityHigh
	if spec.Priority == api.PriorityNormal {
		priority = PriorityNormal
	}
	return &Message{BroadcastID: id, Title: spec.Title, Body: spec.Body, Data: spec.Data, TTL: ttl,
		Priority: priority, CollapseID: "pg-" + id, Expires: testNow.Add(ttl)}
}

// checkBothAccept fails when either provider refuses what the API
// accepted.
func checkBothAccept(t *testing.T, msg *Message) {
	t.Helper()
	b, reason := fcmMessage(msg, testNow)
	if reason == "" {
		reason = b.refuseToken(agreeToken)
	}
	if reason != "" {
		t.Errorf("FCM refuses a message the API accepts: %s", reason)
	}
	if _, reason := apnsMessage(msg, testNow); reason != "" {
		t.Errorf("APNs refuses a message the API accepts: %s", reason)
	}
	silent := *msg
	silent.RecallOf, silent.Silent = msg.BroadcastID, true
	if _, reason := fcmMessage(&silent, testNow); reason != "" {
		t.Errorf("FCM refuses the recall instruction: %s", reason)
	}
}

// TestTextBoundFitsBothProviders fills a message's text to exactly
// api.MaxTextBytes in the shapes that grow most when escaped, and checks
// that both providers take it: what the API accepts, every device can be
// sent.
func TestTextBoundFitsBothProviders(t *testing.T) {
	many := func(n int, key func(int) string, v string) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[key(i)] = v
		}
		return m
	}
	tests := []struct {
		name string
		give api.MessageSpec
	}{
		{"plain title", api.MessageSpec{Title: strings.Repeat("a", api.MaxTextBytes)}},
		{"html escapes", api.MessageSpec{Body: strings.Repeat("<", api.MaxTextBytes/6)}},
		{"quotes", api.MessageSpec{Title: strings.Repeat(`"`, api.MaxTextBytes/2)}},
		{"control characters", api.MessageSpec{Body: strings.Repeat("\x01", api.MaxTextBytes/6)}},
		{"line separators", api.MessageSpec{Title: strings.Repeat("\u2028", api.MaxTextBytes/6)}},
		{"multibyte", api.MessageSpec{Title: strings.Repeat("é", api.MaxTextBytes/2)}},
		{"many empty pairs", api.MessageSpec{Title: "t", Data: many((api.MaxTextBytes-1)/9, func(i int) string { return fmt.Sprintf("%03d", i) }, "")}},
		{"escaped pairs", api.MessageSpec{Title: "t", Data: many(95, func(i int) string { return fmt.Sprintf("<%02d", i) }, strings.Repeat(">", 3))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := api.TextSize(tt.give.Title, tt.give.Body, tt.give.Data)
			if size > api.MaxTextBytes || size < api.MaxTextBytes*9/10 {
				t.Fatalf("the case measures %d bytes; want close to %d", size, api.MaxTextBytes)
			}
			checkBothAccept(t, messageOf(&tt.give, 28*24*time.Hour))
		})
	}
}

// FuzzAcceptedMessageFits parses broadcast bodies as the API does and
// checks that both providers take every message it accepts.
func FuzzAcceptedMessageFits(f *testing.F) {
	for _, seed := range []string{
		`{"audience":{"all":true},"message":{"title":"t","body":"b"}}`,
		`{"audience":{"all":true},"message":{"title":"` + strings.Repeat(`\u003c`, 600) + `"}}`,
		`{"audience":{"all":true},"message":{"title":"t","data":{"gcm":"x","googlex":"y"}}}`,
		`{"audience":{"all":true},"message":{"title":"t","data":{"k":"` + strings.Repeat(`\"`, 1600) + `"}}}`,
		`{"audience":{"all":true},"message":{"title":"t","ttl":"672h","priority":"normal"}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := api.ParseBroadcastRequest(body, 28*24*time.Hour)
		if err != nil {
			return
		}
		ttl, err := req.Message.ParseTTL(28 * 24 * time.Hour)
		if err != nil {
			t.Fatalf("accepted a body whose TTL does not parse: %v", err)
		}
		checkBothAccept(t, messageOf(&req.Message, ttl))
	})
}
