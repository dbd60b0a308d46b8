package controllog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// storedHashes is a full tlog hash store, the reference the Tree's edge is
// checked against.
type storedHashes []tlog.Hash

func (s storedHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x >= int64(len(s)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = s[x]
	}
	return out, nil
}

func TestTreeMatchesTlog(t *testing.T) {
	var tree Tree
	var all storedHashes
	if got, want := tree.Root(), mustTreeHash(t, 0, all); got != want {
		t.Fatalf("empty root = %v, want %v", got, want)
	}
	for n := range int64(300) {
		leaf := fmt.Appendf(nil, "leaf %d", n)
		hs, err := tree.Append(leaf)
		if err != nil {
			t.Fatal(err)
		}
		want, err := tlog.StoredHashes(n, leaf, all)
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) != len(want) || hs[0] != want[0] || hs[len(hs)-1] != want[len(want)-1] {
			t.Fatalf("record %d: stored hashes differ from tlog's", n)
		}
		all = append(all, want...)
		if got, want := tree.Root(), mustTreeHash(t, n+1, all); got != want {
			t.Fatalf("size %d: root %v, want %v", n+1, got, want)
		}
		if len(tree.edge) > 64 {
			t.Fatalf("size %d: edge holds %d hashes", n+1, len(tree.edge))
		}
	}
	// A clone grows independently.
	c := tree.Clone()
	if _, err := c.Append([]byte("more")); err != nil {
		t.Fatal(err)
	}
	if c.Size() != tree.Size()+1 || c.Root() == tree.Root() {
		t.Error("clone shares state with its original")
	}
}

func mustTreeHash(t *testing.T, n int64, r tlog.HashReader) tlog.Hash {
	t.Helper()
	h, err := tlog.TreeHash(n, r)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func logKey(t *testing.T, name string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	derived, err := PublicKey(skey)
	if err != nil || derived != vkey {
		t.Fatalf("PublicKey = %q, %v; want %q", derived, err, vkey)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func TestCheckpointRoundTrip(t *testing.T) {
	s, v := logKey(t, "pushgate.test/control")
	var tree Tree
	tree.Append([]byte("a"))
	c := &Checkpoint{Origin: "pushgate.test/control", Size: 1, Root: tree.Root(), Time: time.UnixMilli(1764586800123).UTC()}
	msg, err := c.Sign(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenCheckpoint(msg, v)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *c {
		t.Fatalf("opened %+v, want %+v", got, c)
	}

	_, other := logKey(t, "pushgate.test/control")
	if _, err := OpenCheckpoint(msg, other); !errors.Is(err, ErrBadCheckpoint) {
		t.Errorf("checkpoint under another key of the same name: %v, want ErrBadCheckpoint", err)
	}
	forged := bytes.Replace(msg, []byte("\n1\n"), []byte("\n2\n"), 1)
	if _, err := OpenCheckpoint(forged, v); !errors.Is(err, ErrBadCheckpoint) {
		t.Errorf("checkpoint with its size changed: %v, want ErrBadCheckpoint", err)
	}
	if _, err := (&Checkpoint{Origin: "elsewhere"}).Sign(s); err == nil {
		t.Error("signed a checkpoint whose origin is not the key's name")
	}
}

func TestParseCheckpoint(t *testing.T) {
	root := strings.Repeat("A", 43) + "="
	for _, text := range []string{
		"",
		"o\n1\n" + root + "\n",                            // no time
		"o\n1\n" + root + "\ntime 5\nextra\n",             // unknown extension
		"o\n-1\n" + root + "\ntime 5\n",                   // negative size
		"o\n01\n" + root + "\ntime 5\n",                   // not canonical
		"o\n1\nAAAA\ntime 5\n",                            // short root
		"o\n1\n" + root + "\ntime five\n",                 // bad time
		"\n1\n" + root + "\ntime 5\n",                     // no origin
		"o\n1\n" + root + "\ntime 5",                      // no final newline
		"o\n99999999999999999999\n" + root + "\ntime 5\n", // overflow
	} {
		if _, err := parseCheckpoint(text); err == nil {
			t.Errorf("parseCheckpoint(%q) succeeded", text)
		}
	}
	if c, err := parseCheckpoint("o\n7\n" + root + "\ntime 5\n"); err != nil || c.Size != 7 || c.Time.UnixMilli() != 5 {
		t.Errorf("valid checkpoint = %+v, %v", c, err)
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add("pushgate.test/control\n3\n" + strings.Repeat("A", 43) + "=\ntime 1\n")
	f.Add("o\n\n\n\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := parseCheckpoint(text)
		if err != nil {
			return
		}
		// What parses prints back to itself.
		if got := c.text(); got != text {
			t.Fatalf("parse(%q) printed %q", text, got)
		}
	})
}

func TestKindOf(t *testing.T) {
	id := "b" + strings.Repeat("0", 25)
	tests := []struct {
		method, path string
		kind         Kind
		target       string
	}{
		{"POST", "/v1/broadcasts", KindSubmit, ""},
		{"POST", "/v1/kill", KindKill, ""},
		{"POST", "/v1/resume", KindResume, ""},
		{"POST", api.CancelPath(id), KindCancel, id},
		{"POST", api.RecallPath(id), KindRecall, id},
		{"POST", api.ApprovalsPath(id), KindApprove, id},
		{"POST", api.RevokePath("ops-admin"), KindRevoke, "ops-admin"},
		{"POST", api.ActionApprovalsPath("a123"), KindApproveAction, "a123"},
		{"GET", "/v1/kill", "", ""},
		{"POST", "/v1/broadcasts/" + id, "", ""},
		{"POST", "/v1/broadcasts/" + id + "/cancel/x", "", ""},
		{"POST", "/v1/broadcasts/not-an-id/cancel", "", ""},
		{"POST", "/v1/keys/a%2Fb/revoke", KindRevoke, "a/b"},
		{"POST", "/v1/keys/a%2fb/revoke", "", ""}, // not spelled as the API spells it
		{"POST", "/v1/keys//revoke", "", ""},
		{"POST", "/v1/devices", "", ""},
	}
	for _, tt := range tests {
		kind, target, ok := KindOf(tt.method, tt.path)
		if kind != tt.kind || target != tt.target || ok != (tt.kind != "") {
			t.Errorf("KindOf(%s %s) = %q, %q, %v; want %q, %q", tt.method, tt.path, kind, target, ok, tt.kind, tt.target)
		}
	}
}

// testKeys is a keyring of an admin, a sender and an approver.
type testKeys struct {
	verifier *signing.Verifier
	signers  map[string]*signing.Signer
}

func newTestKeys(t *testing.T, now func() time.Time) *testKeys {
	t.Helper()
	tk := &testKeys{signers: map[string]*signing.Signer{}}
	var entries []signing.KeyEntry
	for id, role := range map[string]string{"admin": "admin", "sender": "broadcast", "approver": "approve"} {
		pub, priv, err := signing.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		enc, _ := signing.EncodePublicKey(pub)
		entries = append(entries, signing.KeyEntry{ID: id, PublicKey: enc, Roles: []string{role}, Topics: []string{"*"}, MaxAudience: 10})
		tk.signers[id] = &signing.Signer{KeyID: id, Key: priv, Now: now}
	}
	raw, err := signing.MarshalKeyring(entries)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := signing.ParseKeyring(raw)
	if err != nil {
		t.Fatal(err)
	}
	tk.verifier = signing.NewVerifier(signing.VerifierConfig{Profile: signing.DefaultProfile(), Keys: kr})
	return tk
}

// entry returns an entry of a request signed by key id.
func (tk *testKeys) entry(t *testing.T, id, path, body string, at time.Time) *Entry {
	t.Helper()
	r, _ := http.NewRequest("POST", "http://gw.test"+path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if err := tk.signers[id].Sign(r, []byte(body)); err != nil {
		t.Fatal(err)
	}
	req := signing.RequestFromHTTP(r, []byte(body))
	kind, target, _ := KindOf("POST", path)
	return &Entry{Time: at, Request: req, Decision: Decision{Kind: kind, Target: target}}
}

var window = Window{Skew: 5 * time.Minute, MaxAge: 24 * time.Hour}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	signedAt := time.Now()
	tk := newTestKeys(t, func() time.Time { return signedAt })
	kill := `{"scope":"global","reason":"test"}`

	e := tk.entry(t, "admin", api.PathKill, kill, signedAt.Add(time.Second))
	c, err := Check(ctx, tk.verifier, e, window)
	if err != nil || c.Kind != KindKill || c.Verified.Key.ID != "admin" {
		t.Fatalf("Check(admin's kill) = %+v, %v", c, err)
	}
	// An entry read back from its leaf bytes checks the same.
	leaf, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Check(ctx, tk.verifier, back, window); err != nil {
		t.Fatalf("Check(decoded) = %v", err)
	}

	for name, tc := range map[string]struct {
		e    *Entry
		want string
	}{
		"sender's kill":            {tk.entry(t, "sender", api.PathKill, kill, signedAt), "lacks the role"},
		"approver's submission":    {tk.entry(t, "approver", api.PathBroadcasts, `{}`, signedAt), "lacks the role"},
		"not a control action":     {tk.entry(t, "admin", "/v1/devices/import", `{}`, signedAt), "not a control action"},
		"integrated a day late":    {tk.entry(t, "admin", api.PathKill, kill, signedAt.Add(25*time.Hour)), "too far"},
		"signed after integration": {tk.entry(t, "admin", api.PathKill, kill, signedAt.Add(-10*time.Minute)), "too far"},
	} {
		if _, err := Check(ctx, tk.verifier, tc.e, window); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Check = %v, want an error saying %q", name, err, tc.want)
		}
	}

	// A request altered after signing, or a decision that lies about the
	// kind, does not check.
	altered := tk.entry(t, "admin", api.PathKill, kill, signedAt)
	altered.Request.Body = []byte(`{"scope":"topic:x","reason":"test"}`)
	if _, err := Check(ctx, tk.verifier, altered, window); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("altered body: %v", err)
	}
	lying := tk.entry(t, "admin", api.PathKill, kill, signedAt)
	lying.Decision.Kind = KindResume
	if _, err := Check(ctx, tk.verifier, lying, window); err == nil {
		t.Error("an entry whose decision names another kind checked")
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, in := range []string{
		``, `null`, `{}`, `[]`,
		`{"time":"2026-12-01T00:00:00Z"}`,
		`{"request":{"method":"POST"}}`,
		`{"time":"2026-12-01T00:00:00Z","request":{},"extra":1}`,
		`{"time":"2026-12-01T00:00:00Z","request":{}} {}`,
	} {
		if _, err := Decode([]byte(in)); err == nil {
			t.Errorf("Decode(%s) succeeded", in)
		}
	}
	if _, err := Decode(make([]byte, MaxEntryBytes+1)); err == nil {
		t.Error("Decode of an oversized entry succeeded")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"time":"2026-12-01T00:00:00Z","request":{"method":"POST","path":"/v1/kill","header":{"A":["b"]},"body":"e30="},"decision":{"kind":"kill"}}`))
	f.Add([]byte(`{"time":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		if e.Request == nil || e.Time.IsZero() {
			t.Fatal("Decode returned an entry without request or time")
		}
		leaf, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(leaf); err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
	})
}

// export builds an export of entries with a checkpoint after every
// checkpointEvery entries and at the end.
func export(t *testing.T, s note.Signer, entries []*Entry, checkpointEvery int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, 0)
	var tree Tree
	for i, e := range entries {
		leaf, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Entry(int64(i), leaf); err != nil {
			t.Fatal(err)
		}
		tree.Append(leaf)
		if (i+1)%checkpointEvery == 0 || i == len(entries)-1 {
			c := &Checkpoint{Origin: s.Name(), Size: tree.Size(), Root: tree.Root(), Time: e.Time}
			msg, err := c.Sign(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Checkpoint(msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestVerifyExport(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	tk := newTestKeys(t, func() time.Time { return now })
	s, v := logKey(t, "pushgate.test/control")
	var entries []*Entry
	for i := range 9 {
		entries = append(entries, tk.entry(t, "admin", api.PathKill, fmt.Sprintf(`{"scope":"topic:t%d","reason":"r"}`, i), now))
	}
	good := export(t, s, entries, 4)
	sum, err := Verify(ctx, bytes.NewReader(good), v, tk.verifier, window)
	if err != nil || sum.Entries != 9 || sum.Checkpoints != 3 || sum.Checkpoint.Size != 9 {
		t.Fatalf("Verify(good) = %+v, %v", sum, err)
	}

	lines := strings.SplitAfter(string(good), "\n")
	join := func(ls []string) *strings.Reader { return strings.NewReader(strings.Join(ls, "")) }
	for name, tc := range map[string]struct {
		file *strings.Reader
		want string
	}{
		"an entry altered": {join(replaceLine(lines, 5, func(l string) string {
			return strings.Replace(l, `"kind":"kill"`, `"kind":"kill","outcome":"x"`, 1)
		})), "entry from index 4 to 7 was altered"},
		"an entry removed":         {join(append(copyLines(lines[:2]), lines[3:]...)), "entry 3 where entry 2 is next"},
		"the last checkpoint lost": {join(lines[:len(lines)-2]), "not covered by a signed checkpoint"},
		"a checkpoint forged": {join(replaceLine(lines, 4, func(l string) string {
			return strings.Replace(l, `\n4\n`, `\n5\n`, 1)
		})), "bad checkpoint"},
		"garbage": {strings.NewReader("hello\n"), "line 1: not an export line"},
	} {
		if _, err := Verify(ctx, tc.file, v, tk.verifier, window); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Verify = %v, want an error saying %q", name, err, tc.want)
		}
	}

	// A request that appears twice is named, even when the log signs it.
	replayed := export(t, s, append(entries[:3:3], entries[1]), 10)
	if _, err := Verify(ctx, bytes.NewReader(replayed), v, tk.verifier, window); err == nil ||
		!strings.Contains(err.Error(), "entry 3: replays the request of entry 1") {
		t.Errorf("replayed request: %v", err)
	}
	// So is an entry whose key the keyring does not know.
	other := newTestKeys(t, func() time.Time { return now })
	stranger := export(t, s, append(entries[:2:2], other.entry(t, "admin", api.PathResume, `{"scope":"topic:t1"}`, now)), 10)
	if _, err := Verify(ctx, bytes.NewReader(stranger), v, tk.verifier, window); err == nil ||
		!strings.Contains(err.Error(), "entry 2: request does not verify") {
		t.Errorf("entry signed by a key outside the keyring: %v", err)
	}
}

func replaceLine(lines []string, i int, f func(string) string) []string {
	out := append([]string(nil), lines...)
	out[i] = f(out[i])
	return out
}

func copyLines(lines []string) []string { return append([]string(nil), lines...) }

func TestWriterRefusesOutOfOrder(t *testing.T) {
	w := NewWriter(&bytes.Buffer{}, 3)
	if err := w.Entry(2, []byte(`{}`)); err == nil {
		t.Error("wrote entry 2 where 3 is next")
	}
	if err := w.Entry(3, []byte("{\n}")); err == nil {
		t.Error("wrote an entry of two lines")
	}
	if err := w.Entry(3, []byte(`{}`)); err != nil || w.Next() != 4 {
		t.Errorf("Entry(3) = %v, next %d", err, w.Next())
	}
}

func FuzzReadExport(f *testing.F) {
	skey, vkey, err := GenerateKey("pushgate.test/control")
	if err != nil {
		f.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	var tree Tree
	leaf := []byte(`{"time":"2026-12-01T00:00:00Z","request":{"method":"POST","path":"/v1/kill","header":{},"body":null},"decision":{"kind":"kill"}}`)
	tree.Append(leaf)
	msg, err := (&Checkpoint{Origin: s.Name(), Size: 1, Root: tree.Root(), Time: time.UnixMilli(1)}).Sign(s)
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	w := NewWriter(&buf, 0)
	w.Entry(0, leaf)
	w.Checkpoint(msg)
	w.Flush()
	f.Add(buf.Bytes())
	f.Add([]byte("{\"index\":0}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var seen int64
		sum, err := ReadExport(bytes.NewReader(b), v, func(i int64, _ []byte, e *Entry) error {
			if i != seen || e == nil {
				t.Fatalf("visited entry %d (%v) where %d is next", i, e, seen)
			}
			seen++
			return nil
		})
		if err == nil && (sum.Entries != seen || sum.Checkpoint != nil && sum.Checkpoint.Size > sum.Entries) {
			t.Fatalf("summary %+v after %d entries", sum, seen)
		}
	})
}
