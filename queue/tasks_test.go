package queue

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/pushgate/pushgate/api"
)

// FuzzDecodeBatch feeds arbitrary task payloads, as someone who can write
// to the queue could, to the batch decoder: it never panics, refuses
// everything malformed as forged, and what it accepts is a well-formed
// batch of one platform's devices whose members match its tokens.
func FuzzDecodeBatch(f *testing.F) {
	for _, seed := range []string{
		`{"b":"b0123","s":0,"g":0,"a":0,"p":"fcm","t":["tok-1","tok-2"]}`,
		`{"b":"b0123","s":3,"g":1,"a":2,"p":"apns","t":["ab01"]}`,
		`{"b":"b0123","s":0,"p":"apns","t":["not-hex"]}`,
		`{"b":"x","p":"fcm","t":["t"]}`,
		`{"b":"b0123","s":-1,"p":"fcm","t":["t"]}`,
		`{"b":"b0123","p":"sms","t":["t"]}`,
		`{"b":"b0123","p":"fcm","t":[]}`,
		`{"b":"b0123","p":"fcm","t":["a/b"]}`,
		`{"b":"b0123","p":"fcm","t":["t"],"x":1}`,
		`[]`, `null`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := decodeBatch(raw)
		if err != nil {
			if !errors.Is(err, errForged) {
				t.Fatalf("refusal %v is not errForged", err)
			}
			return
		}
		if !api.ValidBroadcastID(b.Broadcast) || !b.Platform.Valid() || len(b.Tokens) == 0 || len(b.Tokens) > MaxBatch ||
			b.Seq < 0 || b.Gen < 0 || b.Attempt < 0 || len(b.members) != len(b.Tokens) {
			t.Fatalf("accepted a malformed batch %+v", b)
		}
		for i, tok := range b.Tokens {
			d := api.Device{Platform: b.Platform, Token: tok}
			if d.Invalid() != "" || b.members[i] != member(d) {
				t.Fatalf("device %d: %q, member %q", i, tok, b.members[i])
			}
		}
		// What decodes re-encodes to a payload that decodes the same.
		again, err := json.Marshal(b.batchPayload)
		if err != nil {
			t.Fatal(err)
		}
		if b2, err := decodeBatch(again); err != nil || b2.Broadcast != b.Broadcast || len(b2.Tokens) != len(b.Tokens) {
			t.Fatalf("re-encoded batch %s: %+v, %v", again, b2, err)
		}
	})
}

// FuzzDecodePlan does the same for plan tasks.
func FuzzDecodePlan(f *testing.F) {
	for _, seed := range []string{`{"b":"b0123"}`, `{"b":""}`, `{"b":"B0123"}`, `{"b":"b0123","x":1}`, `{"b":7}`, `"b0123"`, ``} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := decodePlan(raw)
		if err != nil {
			if !errors.Is(err, errForged) {
				t.Fatalf("refusal %v is not errForged", err)
			}
			return
		}
		if !api.ValidBroadcastID(p.Broadcast) {
			t.Fatalf("accepted plan task for %q", p.Broadcast)
		}
		if PlanTask(p.Broadcast).Type() != TypePlan {
			t.Fatal("PlanTask has the wrong type")
		}
	})
}
