package queue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
)

// FuzzAcceptedBroadcastIsVerifiedByTheWorker posts signed broadcasts at
// fuzzed paths with fuzzed bodies to a real API, and checks that every
// one it accepts (202) passes the workers' verification of its stored
// envelope: what the API accepts, the workers send. Seeds are the ways
// the two once disagreed: percent-encoded and unclean paths, duplicate
// and case-folded JSON keys, FCM-reserved data keys and escaped sizes.
func FuzzAcceptedBroadcastIsVerifiedByTheWorker(f *testing.F) {
	body := `{"audience":{"topic":"citizens"},"message":{"title":"t","body":"b"}}`
	for _, seed := range []struct{ path, body string }{
		{api.PathBroadcasts, body},
		{"/v1/%62roadcasts", body},
		{"/v1/broadcast%73", body},
		{"/v1/broadcasts/", body},
		{"/v1//broadcasts", body},
		{"/v1/./broadcasts", body},
		{"/v1/broadcasts%2F", body},
		{"/v1/BROADCASTS", body},
		{api.PathBroadcasts, `{"audience":{"topic":"citizens"},"audience":{"all":true},"message":{"title":"t"}}`},
		{api.PathBroadcasts, `{"audience":{"topic":"citizens"},"message":{"title":"t","title":"u"}}`},
		{api.PathBroadcasts, `{"Audience":{"topic":"citizens"},"message":{"title":"t"}}`},
		{api.PathBroadcasts, `{"audience":{"topic":"citizens"},"message":{"title":"t","data":{"gcm":"x"}}}`},
		{api.PathBroadcasts, `{"audience":{"topic":"citizens"},"message":{"title":"t","data":{"google.c":"x","a":"1","a":"2"}}}`},
		{api.PathBroadcasts, `{"audience":{"topic":"citizens"},"message":{"title":"` + strings.Repeat(`\u003c`, 700) + `"}}`},
		{api.PathBroadcasts, `{"audience":{"topic":"district-%39"},"message":{"title":"t"}}`},
	} {
		f.Add(seed.path, []byte(seed.body))
	}
	env := gatewaytest.Start(f)
	if status, id := postSigned(f, env, api.PathBroadcasts, []byte(body)); status != http.StatusAccepted || id == "" {
		f.Fatalf("a correct broadcast was answered %d: the target would prove nothing", status)
	}
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		status, id := postSigned(t, env, path, body)
		if status != http.StatusAccepted {
			return
		}
		if err := env.Service.VerifyAsWorker(context.Background(), id); err != nil {
			t.Fatalf("POST %q %s: the API accepted it (202) and the workers refuse it: %v", path, body, err)
		}
	})
}

// postSigned posts body to path on env's API, signed as the sender, and
// returns the status and, for a 202, the broadcast id. A path that would
// not make a request to the API on loopback returns status 0.
func postSigned(tb testing.TB, env *gatewaytest.Env, path string, body []byte) (int, string) {
	tb.Helper()
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?#") {
		return 0, ""
	}
	u, err := url.Parse(env.URL + path)
	if err != nil || u.Host != strings.TrimPrefix(env.URL, "http://") {
		return 0, ""
	}
	req, err := http.NewRequest("POST", u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, ""
	}
	req.Header.Set("Content-Type", "application/json")
	if err := env.Signers[gatewaytest.Sender].Sign(req, body); err != nil {
		return 0, ""
	}
	resp, err := env.Server.Client().Do(req)
	if err != nil {
		tb.Fatalf("POST %q: %v", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted {
		return resp.StatusCode, ""
	}
	var sub api.SubmitResponse
	if err := json.Unmarshal(out, &sub); err != nil || sub.ID == "" {
		tb.Fatalf("POST %q answered 202 with %s", path, out)
	}
	return resp.StatusCode, sub.ID
}
