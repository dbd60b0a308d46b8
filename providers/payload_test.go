package providers

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testNow is the send time of the golden messages.
var testNow = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func mappingMessages() []struct {
	name string
	msg  Message
} {
	return []struct {
		name string
		msg  Message
	}{
		{"alert", Message{
			BroadcastID: "b-123",
			Title:       "Peringatan banjir",
			Body:        "Ketinggian air di Manggarai naik.",
			Data:        map[string]string{"url": "jaki://alerts/123"},
			TTL:         15 * time.Minute,
			Priority:    PriorityHigh,
			CollapseID:  "pg-b-123",
		}},
		{"normal_no_collapse", Message{
			BroadcastID: "b-7",
			Title:       "Info",
			Body:        "Jadwal baru",
			TTL:         time.Hour,
			Priority:    PriorityNormal,
		}},
		{"silent", Message{
			BroadcastID: "b-9",
			Data:        map[string]string{"refresh": "1"},
			TTL:         time.Hour,
			CollapseID:  "pg-b-9",
			Silent:      true,
		}},
		{"recall", Message{
			RecallOf:   "b-123",
			TTL:        time.Hour,
			Priority:   PriorityHigh,
			CollapseID: "pg-b-123",
		}},
		{"ttl_zero", Message{
			BroadcastID: "b-0",
			Title:       "Now or never",
			CollapseID:  "pg-b-0",
		}},
		// A re-send of a broadcast that expires in 10m30.5s: the time
		// left in whole seconds, and the first send's absolute expiry.
		{"expires", Message{
			BroadcastID: "b-9",
			Title:       "Peringatan banjir",
			TTL:         time.Hour,
			Expires:     testNow.Add(10*time.Minute + 30*time.Second + 500*time.Millisecond),
			CollapseID:  "pg-b-9",
		}},
	}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestFCMMessageGolden(t *testing.T) {
	for _, tt := range mappingMessages() {
		t.Run(tt.name, func(t *testing.T) {
			b, reason := fcmMessage(&tt.msg, testNow)
			if reason != "" {
				t.Fatalf("refused: %s", reason)
			}
			m := b.tmpl
			m.Token = "fcm-token-1"
			compact, err := json.Marshal(&m)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(compact), b.sizeWith(m.Token); got != want {
				t.Errorf("serialised size %d, sizeWith says %d", got, want)
			}
			var out bytes.Buffer
			if err := json.Indent(&out, compact, "", "  "); err != nil {
				t.Fatal(err)
			}
			out.WriteByte('\n')
			golden(t, "fcm_"+tt.name+".json", out.Bytes())
		})
	}
}

func TestAPNsMessageGolden(t *testing.T) {
	for _, tt := range mappingMessages() {
		t.Run(tt.name, func(t *testing.T) {
			b, reason := apnsMessage(&tt.msg, testNow)
			if reason != "" {
				t.Fatalf("refused: %s", reason)
			}
			n := b.notification("org.pushgate.app", "apns-token-1")
			// The headers apns2 derives from the notification, and the
			// payload as sent.
			view := struct {
				DeviceToken string          `json:"device_token"`
				Topic       string          `json:"apns-topic"`
				Expiration  int64           `json:"apns-expiration"`
				CollapseID  string          `json:"apns-collapse-id,omitempty"`
				Priority    int             `json:"apns-priority"`
				PushType    string          `json:"apns-push-type"`
				Payload     json.RawMessage `json:"payload"`
			}{n.DeviceToken, n.Topic, n.Expiration.Unix(), n.CollapseID, n.Priority, string(n.PushType), b.payload}
			out, err := json.MarshalIndent(view, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "apns_"+tt.name+".json", append(out, '\n'))
		})
	}
}

func TestMessageRefusals(t *testing.T) {
	valid := func(edit func(*Message)) Message {
		m := Message{BroadcastID: "b-1", Title: "t", Body: "b", TTL: time.Hour, CollapseID: "pg-b-1"}
		edit(&m)
		return m
	}
	const both, fcmOnly, apnsOnly = "both", "fcm", "apns"
	tests := []struct {
		name string
		give Message
		// want is the platforms that refuse; the others must accept.
		want       string
		wantReason string
	}{
		{"collapse id of 64 bytes", valid(func(m *Message) { m.CollapseID = strings.Repeat("c", 64) }), "", ""},
		{"collapse id of 65 bytes", valid(func(m *Message) { m.CollapseID = strings.Repeat("c", 65) }), both, "collapse id is 65 bytes"},
		{"no broadcast id", valid(func(m *Message) { m.BroadcastID = "" }), both, "neither a broadcast id"},
		{"negative ttl", valid(func(m *Message) { m.TTL = -time.Second }), both, "ttl is negative"},
		{"ttl of 4 weeks", valid(func(m *Message) { m.TTL = 28 * 24 * time.Hour }), "", ""},
		{"ttl over 4 weeks", valid(func(m *Message) { m.TTL = 28*24*time.Hour + time.Second }), fcmOnly, "over FCM's limit"},
		{"unknown priority", valid(func(m *Message) { m.Priority = "urgent" }), both, "unknown priority"},
		{"data key pushgate", valid(func(m *Message) { m.Data = map[string]string{"pushgate": "x"} }), both, "reserved for pushgate"},
		// A message goes to both platforms, so each platform's reserved
		// keys are refused by both (api.ReservedDataKey, the API's rule).
		{"data key from", valid(func(m *Message) { m.Data = map[string]string{"from": "x"} }), both, "reserved by FCM"},
		{"data key notification", valid(func(m *Message) { m.Data = map[string]string{"notification": "x"} }), both, "reserved by FCM"},
		{"data key message_type", valid(func(m *Message) { m.Data = map[string]string{"message_type": "x"} }), both, "reserved by FCM"},
		{"data key google.*", valid(func(m *Message) { m.Data = map[string]string{"google.c.a": "x"} }), both, "reserved by FCM"},
		{"data key gcm.*", valid(func(m *Message) { m.Data = map[string]string{"gcm.n.e": "x"} }), both, "reserved by FCM"},
		{"data key googleplay", valid(func(m *Message) { m.Data = map[string]string{"googleplay": "x"} }), both, "reserved by FCM"},
		{"data key gcm", valid(func(m *Message) { m.Data = map[string]string{"gcm": "x"} }), both, "reserved by FCM"},
		{"data key gcmx", valid(func(m *Message) { m.Data = map[string]string{"gcmx": "x"} }), both, "reserved by FCM"},
		{"data key Google", valid(func(m *Message) { m.Data = map[string]string{"Google": "x"} }), both, "reserved by FCM"},
		{"data key googl", valid(func(m *Message) { m.Data = map[string]string{"googl": "x"} }), "", ""},
		{"data key aps", valid(func(m *Message) { m.Data = map[string]string{"aps": "x"} }), both, `"aps" is reserved`},
		{"body of 5000 bytes", valid(func(m *Message) { m.Body = strings.Repeat("x", 5000) }), both, "over the limit of 4096"},
		{"data of 5000 bytes", valid(func(m *Message) { m.Data = map[string]string{"k": strings.Repeat("x", 5000)} }), both, "over the limit of 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, fcmReason := fcmMessage(&tt.give, testNow)
			_, apnsReason := apnsMessage(&tt.give, testNow)
			check := func(platform, reason string, refuses bool) {
				t.Helper()
				switch {
				case refuses && !strings.Contains(reason, tt.wantReason):
					t.Errorf("%s: reason %q, want it to contain %q", platform, reason, tt.wantReason)
				case !refuses && reason != "":
					t.Errorf("%s: refused with %q, want it accepted", platform, reason)
				}
			}
			check("fcm", fcmReason, tt.want == both || tt.want == fcmOnly)
			check("apns", apnsReason, tt.want == both || tt.want == apnsOnly)
		})
	}
}

// TestPayloadLimitBoundary pads a message to exactly MaxPayload bytes as
// each provider measures it, and checks that one byte more is refused.
func TestPayloadLimitBoundary(t *testing.T) {
	base := Message{BroadcastID: "b-1", Title: "t", TTL: time.Hour, CollapseID: "pg-b-1"}
	withPad := func(n int) *Message {
		m := base
		m.Data = map[string]string{"pad": strings.Repeat("x", n)}
		return &m
	}
	t.Run("apns", func(t *testing.T) {
		b, reason := apnsMessage(withPad(0), testNow)
		if reason != "" {
			t.Fatal(reason)
		}
		fill := MaxPayload - len(b.payload)
		if b, reason := apnsMessage(withPad(fill), testNow); reason != "" || len(b.payload) != MaxPayload {
			t.Fatalf("payload of exactly %d bytes: reason %q", MaxPayload, reason)
		}
		if _, reason := apnsMessage(withPad(fill+1), testNow); !strings.Contains(reason, "4097 bytes") {
			t.Errorf("payload of %d bytes: reason %q, want a refusal", MaxPayload+1, reason)
		}
	})
	t.Run("fcm", func(t *testing.T) {
		const token = "tok-abc"
		b, reason := fcmMessage(withPad(0), testNow)
		if reason != "" {
			t.Fatal(reason)
		}
		fill := MaxPayload - b.sizeWith(token)
		b, reason = fcmMessage(withPad(fill), testNow)
		if reason != "" {
			t.Fatalf("message of exactly %d bytes refused for the batch: %s", MaxPayload, reason)
		}
		if r := b.refuseToken(token); r != "" {
			t.Errorf("message of exactly %d bytes refused for the device: %s", MaxPayload, r)
		}
		if r := b.refuseToken(token + "x"); !strings.Contains(r, "4097 bytes") {
			t.Errorf("message of %d bytes with a longer token: reason %q, want a refusal", MaxPayload+1, r)
		}
	})
}
