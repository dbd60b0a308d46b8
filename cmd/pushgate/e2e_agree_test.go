package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
)

// rawAnswer is an API answer read whole: a status, and the problem code or
// the broadcast id it carries.
type rawAnswer struct {
	status int
	code   string
	id     string
	state  string
}

// post signs body as key name and posts it to path exactly as spelled, as
// a client that builds its own requests would.
func (e *e2e) post(name, path string, body []byte) rawAnswer {
	e.t.Helper()
	signer, err := e.st.Signer(name)
	if err != nil {
		e.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, e.app.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := signer.Sign(req, body); err != nil {
		e.t.Fatal(err)
	}
	if got := req.URL.EscapedPath(); got != path {
		e.t.Fatalf("the request would go to %s, not %s", got, path)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	var out struct {
		Code  string `json:"code"`
		ID    string `json:"id"`
		State string `json:"state"`
	}
	_ = json.Unmarshal(b, &out)
	return rawAnswer{status: resp.StatusCode, code: out.Code, id: out.ID, state: out.State}
}

// TestWhatTheAPIAcceptsIsSent sends, through the real HTTP API and workers
// against the simulators, what the API used to accept and the workers
// then refused: percent-encoded paths, data keys FCM refuses, text too
// big once escaped, ambiguous JSON. Each is refused at the API with a
// stable code and writes nothing, so the correct request sent next, with
// the same idempotency key, is its own broadcast and is delivered.
func TestWhatTheAPIAcceptsIsSent(t *testing.T) {
	e := newE2E(t, stack.Options{Devices: 20, AndroidShare: 0.5, Seed: 16}, app.Roles{API: true, Worker: true})
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"idempotency_key":"flood-16","audience":{"topic":"citizens"},"message":{"title":"Flood","body":"Avoid Manggarai.","ttl":"15m"}}`)

	// ServeMux routes /v1/%62roadcasts to the submission, but the signed
	// @path is not the one a worker checks: it stayed queued for good,
	// and its idempotency key answered the correct retry with it.
	if a := e.post(stack.KeySender, "/v1/%62roadcasts", body); a.status != http.StatusBadRequest || a.code != api.CodeNonCanonicalPath {
		t.Errorf("percent-encoded submission: %d %q (broadcast %s), want 400 %s", a.status, a.code, a.id, api.CodeNonCanonicalPath)
	}
	retry := e.post(stack.KeySender, api.PathBroadcasts, body)
	if retry.status != http.StatusAccepted {
		t.Fatalf("the correct retry with the same idempotency key: %d %q (broadcast %s), want 202, a broadcast of its own",
			retry.status, retry.code, retry.id)
	}
	if st := e.waitFinished(retry.id); st.State != api.StateCompleted || st.Counters.Sent != 20 {
		t.Fatalf("the retry ended %s with %+v, want completed and 20 sent", st.State, st.Counters)
	}
	if got := phonesWith(e.st.Sim, "Flood"); len(got) != 20 {
		t.Errorf("%d phones show the broadcast, want 20", len(got))
	}

	// A percent-encoded recall left the broadcast recalling for good, and
	// the correct one was then refused as a recall of a recalling one.
	recall, err := json.Marshal(retraction())
	if err != nil {
		t.Fatal(err)
	}
	odd := api.BroadcastPath(retry.id) + "/%72ecall"
	if a := e.post(stack.KeyAdmin, odd, recall); a.status != http.StatusBadRequest || a.code != api.CodeNonCanonicalPath {
		t.Errorf("percent-encoded recall: %d %q, want 400 %s", a.status, a.code, api.CodeNonCanonicalPath)
	}
	if st := e.status(retry.id); st.State != api.StateCompleted {
		t.Errorf("after the refused recall the broadcast is %s, want completed", st.State)
	}
	if a := e.post(stack.KeyAdmin, api.RecallPath(retry.id), recall); a.status != http.StatusAccepted {
		t.Fatalf("the correct recall: %d %q, want 202", a.status, a.code)
	}
	if st := e.waitFinished(retry.id); st.State != api.StateRecalled || st.Counters.Recalled != 20 {
		t.Errorf("after the correct recall the broadcast is %s with %+v, want recalled on 20 phones", st.State, st.Counters)
	}

	// Bodies the providers or other JSON readers would take otherwise.
	for _, tt := range []struct {
		name, body, code string
	}{
		{"data key gcm", `{"audience":{"topic":"citizens"},"message":{"title":"t","data":{"gcm":"x"}}}`, api.CodeInvalidMessage},
		{"data key google prefix", `{"audience":{"topic":"citizens"},"message":{"title":"t","data":{"google_id":"x"}}}`, api.CodeInvalidMessage},
		{"text over the payload once escaped", `{"audience":{"topic":"citizens"},"message":{"title":"` + strings.Repeat("<", 3000) + `"}}`, api.CodeInvalidMessage},
		{"repeated title", `{"audience":{"topic":"citizens"},"message":{"title":"Drill","title":"EVACUATE"}}`, api.CodeDuplicateKey},
	} {
		if a := e.post(stack.KeySender, api.PathBroadcasts, []byte(tt.body)); a.status != http.StatusBadRequest || a.code != tt.code {
			t.Errorf("%s: %d %q (broadcast %s), want 400 %s", tt.name, a.status, a.code, a.id, tt.code)
		}
	}
	page, err := e.owner.List(ctx, client.ListOptions{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Broadcasts) != 1 {
		t.Errorf("%d broadcasts stored, want only the correct one", len(page.Broadcasts))
	}
}
