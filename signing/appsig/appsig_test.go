package appsig

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

const vectorsFile = "testdata/vectors.json"

// TestVectors checks that the committed vectors are what this package
// generates and that its verifier gives each its verdict. The reference
// verifiers in other languages run the same file.
func TestVectors(t *testing.T) {
	vs, err := GenerateVectors()
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.MarshalIndent(vs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(vectorsFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("%v (generate it with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what this package generates: regenerate it with -update and review the change", vectorsFile)
	}
	var committed Vectors
	if err := json.Unmarshal(got, &committed); err != nil {
		t.Fatal(err)
	}
	if err := committed.Check(); err != nil {
		t.Error(err)
	}
	kinds := map[string]int{}
	for _, c := range committed.Cases {
		kinds[c.Want]++
	}
	for _, code := range []string{"ok", CodeMalformed, CodeVersion, CodeUnknownKey, CodeBadSignature, CodeExpired, CodeWrongAud, CodeAlreadyShown} {
		if kinds[code] == 0 {
			t.Errorf("no vector expects %s", code)
		}
	}
}

// TestEncodeIsUnambiguous checks that moving bytes between fields, or
// between a data key and its value, changes the encoding.
func TestEncodeIsUnambiguous(t *testing.T) {
	base := Claims{KeyID: "k", Kind: KindAlert, Broadcast: "b", Expires: 1, Audience: AudienceAll, Title: "ab", Body: "c"}
	moved := base
	moved.Title, moved.Body = "a", "bc"
	if bytes.Equal(base.Encode(), moved.Encode()) {
		t.Error("title and body boundaries are not encoded")
	}
	d1, d2 := base, base
	d1.Data = map[string]string{"ab": "c"}
	d2.Data = map[string]string{"a": "bc"}
	if bytes.Equal(d1.Encode(), d2.Encode()) {
		t.Error("data key and value boundaries are not encoded")
	}
	empty := base
	empty.Data = map[string]string{}
	if !bytes.Equal(base.Encode(), empty.Encode()) {
		t.Error("no data and empty data encode differently")
	}
}

// FuzzVerify feeds arbitrary blocks and texts to the verifier: it never
// panics, and whatever it accepts was signed by the trusted key with
// exactly the claims it returns.
func FuzzVerify(f *testing.F) {
	key := vectorKey("fuzz")
	s, err := NewSigner("k1", key)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	b := s.Sign(Claims{Kind: KindAlert, Broadcast: "b1", Expires: now.Unix() + 60, Audience: AudienceAll, Title: "t", Body: "b"}, false)
	raw, _ := json.Marshal(b)
	f.Add(string(raw), "t", "b", "")
	f.Add(`{"v":1,"kid":"k1","kind":"alert","broadcast":"b1","exp":1,"aud":"all","sig":""}`, "", "", "x")
	f.Add(`{"v":1,"kid":"k1","kind":"recall-remove","recall":"b1","exp":9999999999,"aud":"topic:","sig":"`+b.Sig+`"}`, "", "", "")
	f.Add(`[1,2]`, "", "", "")
	v := &Verifier{Keys: map[string]ed25519.PublicKey{"k1": s.Public()}, Now: func() time.Time { return now }}
	f.Fuzz(func(t *testing.T, block, title, body, extra string) {
		data := map[string]string{DataKey: block}
		if extra != "" {
			data["extra"] = extra
		}
		c, err := v.Verify(Device{Token: "tok", Topics: []string{"t1"}}, Push{Title: title, Body: body, Data: data})
		if err != nil {
			if CodeOf(err) == "" {
				t.Fatalf("a refusal without a code: %v", err)
			}
			return
		}
		var got Block
		if err := json.Unmarshal([]byte(block), &got); err != nil {
			t.Fatalf("accepted a block that does not parse: %v", err)
		}
		sig, err := base64.RawURLEncoding.DecodeString(got.Sig)
		if err != nil || !bytes.Equal(sig, ed25519.Sign(key, c.Encode())) {
			t.Fatalf("accepted claims %+v that the key did not sign", c)
		}
	})
}
