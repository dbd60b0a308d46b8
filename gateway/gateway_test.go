package gateway_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/controllog"
	"github.com/pushgate/pushgate/gateway"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

func TestEveryRouteHappyPath(t *testing.T) {
	env := gatewaytest.Start(t)
	ctx := context.Background()
	register(t, env, "citizens", 3)
	getID := submit(t, env, gatewaytest.Sender, broadcastBody(`{"topic":"citizens"}`))
	cancelID := submit(t, env, gatewaytest.Sender, broadcastBody(`{"topic":"district-1"}`))
	recallID := submit(t, env, gatewaytest.Sender, broadcastBody(`{"topic":"district-2"}`))
	env.Kill(t, gatewaytest.Admin, api.TopicScope("to-resume"), "setup")

	tests := []struct {
		name       string
		key        string
		method     string
		path, body string
		want       int
		check      func(t *testing.T, r response)
	}{
		{
			name: "submit", key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts",
			body: broadcastBody(tokensJSON(2)), want: http.StatusAccepted,
			check: func(t *testing.T, r response) {
				var got struct{ ID, State, Status_URL string }
				r.decode(t, &got)
				if !api.ValidBroadcastID(got.ID) || got.State != api.StateQueued || got.Status_URL != "/v1/broadcasts/"+got.ID {
					t.Errorf("answer = %s", r.body)
				}
				if loc := r.header.Get("Location"); loc != "/v1/broadcasts/"+got.ID {
					t.Errorf("Location = %q", loc)
				}
			},
		},
		{
			name: "get by an approver", key: gatewaytest.Approver, method: "GET", path: "/v1/broadcasts/" + getID,
			want: http.StatusOK,
			check: func(t *testing.T, r response) {
				var st api.Status
				r.decode(t, &st)
				if st.ID != getID || st.State != api.StateQueued || st.KeyID != gatewaytest.Sender ||
					st.Topic != "citizens" || st.TTL != "15m0s" || len(st.Timeline) == 0 {
					t.Errorf("status = %s", r.body)
				}
			},
		},
		{
			name: "list", key: gatewaytest.Admin, method: "GET", path: "/v1/broadcasts?state=queued&limit=2",
			want: http.StatusOK,
			check: func(t *testing.T, r response) {
				var got struct {
					Broadcasts []api.Status `json:"broadcasts"`
					Next       string       `json:"next"`
				}
				r.decode(t, &got)
				if len(got.Broadcasts) != 2 || got.Next == "" {
					t.Errorf("list = %s, want 2 broadcasts and a next cursor", r.body)
				}
			},
		},
		{
			name: "cancel by submitter", key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts/" + cancelID + "/cancel",
			body: `{"reason":"wrong district"}`, want: http.StatusOK,
			check: func(t *testing.T, r response) {
				var st api.Status
				r.decode(t, &st)
				if st.State != api.StateCancelled {
					t.Errorf("state = %s, want cancelled", st.State)
				}
			},
		},
		{
			name: "recall with custom text waits for a second person", key: gatewaytest.Admin, method: "POST",
			path: "/v1/broadcasts/" + recallID + "/recall",
			body: `{"mode":"replace","replacement":{"title":"Correction","body":"Ignore the last alert."}}`, want: http.StatusAccepted,
			check: func(t *testing.T, r response) {
				var p api.PendingAction
				r.decode(t, &p)
				if p.Kind != api.ActionRecall || p.Target != recallID || p.Done || p.ApprovalsRequired != 1 || p.Approvals == nil {
					t.Errorf("answer = %s, want a pending recall", r.body)
				}
				if n := queuedTasks(t, env, queue.QueueRecall); n != 0 {
					t.Errorf("recall queue holds %d tasks, want none before the approval", n)
				}
			},
		},
		{
			name: "recall with the standard retraction", key: gatewaytest.Admin, method: "POST", path: "/v1/broadcasts/" + recallID + "/recall",
			body: `{"mode":"replace","replacement":{"title":"Koreksi","body":"Pesan sebelumnya dibatalkan."}}`, want: http.StatusAccepted,
			check: func(t *testing.T, r response) {
				var st api.Status
				r.decode(t, &st)
				if st.State != api.StateRecalling || st.RecallMode != api.RecallReplace {
					t.Errorf("status = %s, want recalling (replace)", r.body)
				}
				if n := queuedTasks(t, env, queue.QueueRecall); n != 1 {
					t.Errorf("recall queue holds %d tasks, want 1", n)
				}
			},
		},
		{
			name: "kill and wait", key: gatewaytest.Admin, method: "POST", path: "/v1/kill?wait=true",
			body: `{"scope":"topic:floods","reason":"bad text"}`, want: http.StatusOK,
			check: func(t *testing.T, r response) {
				var got struct {
					Kill    api.Kill
					Version int64
					Waited  bool
					Ack     *api.AckReport
				}
				r.decode(t, &got)
				if got.Kill.Scope != "topic:floods" || got.Kill.By != gatewaytest.Admin || !got.Waited ||
					got.Ack == nil || !got.Ack.Acknowledged || got.Version == 0 {
					t.Errorf("kill = %s", r.body)
				}
			},
		},
		{
			name: "list kills", key: gatewaytest.Admin, method: "GET", path: "/v1/kill", want: http.StatusOK,
			check: func(t *testing.T, r response) {
				var got struct{ Kills []api.Kill }
				r.decode(t, &got)
				scopes := []string{}
				for _, k := range got.Kills {
					scopes = append(scopes, k.Scope)
				}
				if !slices.Contains(scopes, "topic:floods") || !slices.Contains(scopes, "topic:to-resume") {
					t.Errorf("kills = %v", scopes)
				}
			},
		},
		{
			name: "resume", key: gatewaytest.Admin, method: "POST", path: "/v1/resume",
			body: `{"scope":"topic:to-resume","reason":"fixed"}`, want: http.StatusOK,
			check: func(t *testing.T, r response) {
				if env.Service.Control().IsActive("topic:to-resume") {
					t.Error("kill still active after resume")
				}
			},
		},
		{
			name: "revoke", key: gatewaytest.Admin, method: "POST", path: "/v1/keys/" + gatewaytest.Doomed + "/revoke",
			body: `{"reason":"key leaked"}`, want: http.StatusOK,
			check: func(t *testing.T, r response) {
				if revoked, _ := env.Service.Control().Revoked(ctx, gatewaytest.Doomed); !revoked {
					t.Error("key not revoked")
				}
			},
		},
		{
			name: "register device", key: gatewaytest.Registrar, method: "PUT", path: "/v1/devices/fcm/phone-1",
			body: `{"topics":["citizens","district-7","citizens"]}`, want: http.StatusOK,
			check: func(t *testing.T, r response) {
				if want := `{"platform":"fcm","topics":["citizens","district-7"]}`; strings.TrimSpace(string(r.body)) != want {
					t.Errorf("answer = %s, want %s", r.body, want)
				}
				if n, _ := env.Service.Registry().Count(ctx, "district-7"); n != 1 {
					t.Errorf("district-7 has %d devices, want 1", n)
				}
			},
		},
		{
			name: "remove device", key: gatewaytest.Registrar, method: "DELETE", path: "/v1/devices/fcm/phone-1",
			want: http.StatusNoContent,
			check: func(t *testing.T, r response) {
				if n, _ := env.Service.Registry().Count(ctx, "district-7"); n != 0 {
					t.Errorf("district-7 has %d devices, want 0", n)
				}
			},
		},
		{
			name: "remove unknown device", key: gatewaytest.Registrar, method: "DELETE", path: "/v1/devices/fcm/phone-1",
			want: http.StatusNotFound,
			check: func(t *testing.T, r response) {
				if p := r.problem(t); p.Code != api.CodeNotFound {
					t.Errorf("code = %s", p.Code)
				}
			},
		},
		{
			name: "import devices", key: gatewaytest.Registrar, method: "POST", path: "/v1/devices/import",
			body:  `{"devices":[{"platform":"fcm","token":"imp-1","topics":["imported"]},{"platform":"apns","token":"ab12","topics":["imported"]}]}`,
			want:  http.StatusOK,
			check: func(t *testing.T, r response) { expectJSON(t, r, `{"imported":2}`) },
		},
		{
			name: "audit", key: gatewaytest.Admin, method: "GET", path: "/v1/audit?limit=50", want: http.StatusOK,
			check: func(t *testing.T, r response) {
				var got struct{ Entries []api.AuditEntry }
				r.decode(t, &got)
				var actions []string
				for _, e := range got.Entries {
					actions = append(actions, e.Action)
				}
				for _, want := range []string{"cancel", "recall", "kill", "resume", "revoke"} {
					if !slices.Contains(actions, want) {
						t.Errorf("audit actions %v lack %s", actions, want)
					}
				}
			},
		},
		{name: "healthz", method: "GET", path: "/healthz", want: http.StatusOK},
		{name: "readyz", method: "GET", path: "/readyz", want: http.StatusOK},
		{
			name: "metrics", method: "GET", path: "/metrics", want: http.StatusOK,
			check: func(t *testing.T, r response) {
				if !strings.Contains(string(r.body), `pushgate_http_requests_total{code="202",route="POST /v1/broadcasts"}`) {
					t.Errorf("metrics lack the request counter:\n%s", r.body)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, env, tt.key, tt.method, tt.path, tt.body)
			if r.status != tt.want {
				t.Fatalf("status = %d, want %d; body %s", r.status, tt.want, r.body)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

func expectJSON(t *testing.T, r response, want string) {
	t.Helper()
	if got := strings.TrimSpace(string(r.body)); got != want {
		t.Errorf("answer = %s, want %s", got, want)
	}
}

// TestRefusalsWriteNothing sends requests the API must refuse and checks
// the problem and that no broadcast was stored and no task enqueued.
func TestRefusalsWriteNothing(t *testing.T) {
	env := gatewaytest.Start(t)
	ctx := context.Background()
	register(t, env, "citizens", 3)
	big := `{"audience":{"topic":"citizens"},"message":{"title":"t","body":"` + strings.Repeat("x", gateway.MaxBodyBytes) + `"}}`

	type give struct {
		key, method, path, body string
		// opts change the request before it is signed.
		opts []func(*http.Request)
		// setup runs before the request; its result runs after.
		setup func(t *testing.T) (undo func())
	}
	type want struct {
		status int
		code   string
	}
	tests := []struct {
		name string
		give give
		want want
	}{
		{"unsigned", give{method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"topic":"citizens"}`)},
			want{401, "missing_signature"}},
		{"unsigned GET", give{method: "GET", path: "/v1/broadcasts"}, want{401, "missing_signature"}},
		{"wrong role for broadcast", give{key: gatewaytest.Registrar, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"topic":"citizens"}`)},
			want{403, "forbidden"}},
		{"wrong role for kill", give{key: gatewaytest.Sender, method: "POST", path: "/v1/kill", body: `{"scope":"global","reason":"x"}`},
			want{403, "forbidden"}},
		{"wrong role for devices", give{key: gatewaytest.Sender, method: "PUT", path: "/v1/devices/fcm/t1", body: `{"topics":[]}`},
			want{403, "forbidden"}},
		{"wrong role for audit", give{key: gatewaytest.Sender, method: "GET", path: "/v1/audit"}, want{403, "forbidden"}},
		{"revoked key", give{key: gatewaytest.Doomed, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"topic":"citizens"}`),
			setup: func(t *testing.T) func() {
				v, envl := env.Sign(t, gatewaytest.Admin, "POST", api.RevokePath(gatewaytest.Doomed), []byte(`{"reason":"test"}`))
				if _, _, err := env.Service.Revoke(ctx, v, envl, gatewaytest.Doomed, "test"); err != nil {
					t.Fatal(err)
				}
				return nil
			}},
			want{401, "revoked_key"}},
		{"body altered after signing", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"topic":"citizens"}`)},
			want{401, "digest_mismatch"}},
		{"not JSON", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: `{"audience":`},
			want{400, "malformed_json"}},
		{"empty body", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts"}, want{400, "malformed_json"}},
		{"wrong type", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: `{"audience":{"topic":7},"message":{"title":"t"}}`},
			want{400, "malformed_json"}},
		{"unknown field", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: `{"audience":{"topic":"citizens"},"message":{"title":"t"},"urgent":true}`},
			want{400, "unknown_field"}},
		{"empty audience", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{}`)},
			want{400, "invalid_audience"}},
		{"empty token list", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"tokens":[]}`)},
			want{400, "invalid_audience"}},
		// [A, A, B]: a device named twice would be sent twice and counted
		// once, leaving the broadcast short of completion for good.
		{"a device named twice", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts",
			body: broadcastBody(`{"tokens":[{"platform":"fcm","token":"tok-a"},{"platform":"fcm","token":"tok-a"},{"platform":"fcm","token":"tok-b"}]}`)},
			want{400, "invalid_audience"}},
		{"ambiguous audience", give{key: gatewaytest.Wide, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"topic":"citizens","all":true}`)},
			want{400, "invalid_audience"}},
		{"bad ttl", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: `{"audience":{"topic":"citizens"},"message":{"title":"t","ttl":"soon"}}`},
			want{400, "invalid_ttl"}},
		{"ttl over the cap", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: `{"audience":{"topic":"citizens"},"message":{"title":"t","ttl":"48h"}}`},
			want{400, "invalid_ttl"}},
		{"too many tokens", give{key: gatewaytest.Wide, method: "POST", path: "/v1/broadcasts", body: broadcastBody(tokensJSON(api.MaxTokens + 1))},
			want{400, "too_many_tokens"}},
		{"body over 1 MiB", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: big},
			want{413, "body_too_large"}},
		{"not JSON media type", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"topic":"citizens"}`),
			opts: []func(*http.Request){func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }}},
			want{415, "unsupported_media_type"}},
		{"topic not allowed", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"topic":"secret"}`)},
			want{403, "topic_not_allowed"}},
		{"all not allowed", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"all":true}`)},
			want{403, "topic_not_allowed"}},
		{"tokens over the cap", give{key: gatewaytest.Small, method: "POST", path: "/v1/broadcasts", body: broadcastBody(tokensJSON(3))},
			want{403, "audience_over_cap"}},
		{"topic over the cap", give{key: gatewaytest.Small, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"topic":"citizens"}`)},
			want{403, "audience_over_cap"}},
		{"global kill active", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts", body: broadcastBody(`{"topic":"citizens"}`),
			setup: func(t *testing.T) func() {
				env.Kill(t, gatewaytest.Admin, api.ScopeGlobal, "test")
				return func() {
					// Lifting a global kill takes a second person.
					body := []byte(`{"scope":"global","reason":"test"}`)
					v, envl := env.Sign(t, gatewaytest.Admin, "POST", api.PathResume, body)
					_, pending, err := env.Service.Resume(ctx, v, envl, api.ScopeGlobal, "test")
					if err != nil {
						t.Fatal(err)
					}
					abody := []byte(`{"action_id":"` + pending.ID + `","request_sha256":"` + pending.RequestSHA256 + `"}`)
					av, aenv := env.Sign(t, gatewaytest.Approver, "POST", api.ActionApprovalsPath(pending.ID), abody)
					req, _ := api.ParseActionApprovalRequest(abody, pending.ID)
					if _, err := env.Service.ApproveAction(ctx, av, aenv, req); err != nil {
						t.Fatal(err)
					}
				}
			}},
			want{503, "kill_switch_active"}},
		{"kill without reason", give{key: gatewaytest.Admin, method: "POST", path: "/v1/kill", body: `{"scope":"global"}`},
			want{400, "invalid_reason"}},
		{"kill with a bad scope", give{key: gatewaytest.Admin, method: "POST", path: "/v1/kill", body: `{"scope":"everything","reason":"x"}`},
			want{400, "invalid_scope"}},
		{"kill with a bad wait", give{key: gatewaytest.Admin, method: "POST", path: "/v1/kill?wait=maybe", body: `{"scope":"global","reason":"x"}`},
			want{400, "invalid_query"}},
		{"resume a broadcast", give{key: gatewaytest.Admin, method: "POST", path: "/v1/resume", body: `{"scope":"broadcast:b123"}`},
			want{409, "not_resumable"}},
		{"resume nothing", give{key: gatewaytest.Admin, method: "POST", path: "/v1/resume", body: `{"scope":"topic:calm"}`},
			want{404, "not_found"}},
		{"list with a bad state", give{key: gatewaytest.Sender, method: "GET", path: "/v1/broadcasts?state=lost"},
			want{400, "invalid_query"}},
		{"list with a bad limit", give{key: gatewaytest.Sender, method: "GET", path: "/v1/broadcasts?limit=501"},
			want{400, "invalid_query"}},
		{"unknown broadcast", give{key: gatewaytest.Sender, method: "GET", path: "/v1/broadcasts/bdoesnotexist"},
			want{404, "not_found"}},
		{"cancel an unknown broadcast", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts/b0/cancel"},
			want{404, "not_found"}},
		{"recall without a mode", give{key: gatewaytest.Admin, method: "POST", path: "/v1/broadcasts/b0/recall", body: `{}`},
			want{400, "invalid_recall"}},
		{"bad platform", give{key: gatewaytest.Registrar, method: "PUT", path: "/v1/devices/sms/t1", body: `{"topics":["citizens"]}`},
			want{400, "invalid_device"}},
		{"bad topic", give{key: gatewaytest.Registrar, method: "PUT", path: "/v1/devices/fcm/t1", body: `{"topics":["no spaces"]}`},
			want{400, "invalid_topic"}},
		{"import too many", give{key: gatewaytest.Registrar, method: "POST", path: "/v1/devices/import", body: importJSON(api.MaxTokens + 1)},
			want{400, "too_many_tokens"}},
		// ServeMux routes these to the broadcast routes, but the signature
		// covers the path as sent and the workers accept only the
		// canonical one: accepted here, they would never be sent.
		{"percent-encoded submission", give{key: gatewaytest.Sender, method: "POST", path: "/v1/%62roadcasts", body: broadcastBody(`{"topic":"citizens"}`)},
			want{400, "non_canonical_path"}},
		{"percent-encoded recall", give{key: gatewaytest.Admin, method: "POST", path: "/v1/broadcasts/b0/%72ecall", body: `{"mode":"remove"}`},
			want{400, "non_canonical_path"}},
		{"percent-encoded id", give{key: gatewaytest.Admin, method: "POST", path: "/v1/broadcasts/%620/recall", body: `{"mode":"remove"}`},
			want{400, "non_canonical_path"}},
		{"double slash", give{key: gatewaytest.Sender, method: "POST", path: "/v1//broadcasts", body: broadcastBody(`{"topic":"citizens"}`)},
			want{400, "non_canonical_path"}},
		{"dot segments", give{key: gatewaytest.Sender, method: "POST", path: "/v1/x/../broadcasts", body: broadcastBody(`{"topic":"citizens"}`)},
			want{400, "non_canonical_path"}},
		{"trailing slash", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts/", body: broadcastBody(`{"topic":"citizens"}`)},
			want{400, "non_canonical_path"}},
		{"lowercase hex in a token", give{key: gatewaytest.Registrar, method: "PUT", path: "/v1/devices/fcm/a%3fb", body: `{"topics":["citizens"]}`},
			want{400, "non_canonical_path"}},
		{"repeated title", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts",
			body: `{"audience":{"topic":"citizens"},"message":{"title":"Drill","title":"EVACUATE NOW"}}`},
			want{400, "duplicate_key"}},
		{"field name in another case", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts",
			body: `{"audience":{"topic":"citizens"},"message":{"title":"Drill","Title":"EVACUATE NOW"}}`},
			want{400, "unknown_field"}},
		{"data key FCM refuses", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts",
			body: `{"audience":{"topic":"citizens"},"message":{"title":"t","data":{"gcm":"x"}}}`},
			want{400, "invalid_message"}},
		{"data key with a google prefix", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts",
			body: `{"audience":{"topic":"citizens"},"message":{"title":"t","data":{"googleplay":"x"}}}`},
			want{400, "invalid_message"}},
		{"text over the payload once escaped", give{key: gatewaytest.Sender, method: "POST", path: "/v1/broadcasts",
			body: `{"audience":{"topic":"citizens"},"message":{"title":"` + strings.Repeat("<", 3000) + `"}}`},
			want{400, "invalid_message"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.give.setup != nil {
				if undo := tt.give.setup(t); undo != nil {
					defer undo()
				}
			}
			killsBefore := env.Service.ActiveKills()
			var body []byte
			if tt.give.body != "" {
				body = []byte(tt.give.body)
			}
			req := newRequest(t, env, tt.give.key, tt.give.method, tt.give.path, body, tt.give.opts...)
			if tt.want.code == "digest_mismatch" {
				altered := strings.Replace(tt.give.body, "citizens", "citizenz", 1)
				req.Body = io.NopCloser(strings.NewReader(altered))
			}
			r := send(t, env, req)
			if r.status != tt.want.status {
				t.Fatalf("status = %d, want %d; body %s", r.status, tt.want.status, r.body)
			}
			if p := r.problem(t); p.Code != tt.want.code {
				t.Errorf("code = %q, want %q (%s)", p.Code, tt.want.code, p.Detail)
			}
			assertNothingStored(t, env)
			if n, _ := env.Service.Registry().Count(ctx, ""); n != 3 {
				t.Errorf("registry holds %d devices, want the 3 registered at setup", n)
			}
			if kills := env.Service.ActiveKills(); len(kills) != len(killsBefore) {
				t.Errorf("active kills %v, want %v as before", kills, killsBefore)
			}
		})
	}
}

func importJSON(n int) string {
	var b strings.Builder
	b.WriteString(`{"devices":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"platform":"fcm","token":"imp-%05d","topics":["t"]}`, i)
	}
	b.WriteString(`]}`)
	return b.String()
}

func TestReplayedRequestIsRefused(t *testing.T) {
	env := gatewaytest.Start(t)
	register(t, env, "citizens", 1)
	body := []byte(broadcastBody(tokensJSON(1)))
	req := newRequest(t, env, gatewaytest.Sender, "POST", "/v1/broadcasts", body)
	replay := req.Clone(context.Background())
	replay.Body = io.NopCloser(strings.NewReader(string(body)))

	if r := send(t, env, req); r.status != http.StatusAccepted {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	r := send(t, env, replay)
	if r.status != http.StatusUnauthorized {
		t.Fatalf("replay: %d %s, want 401", r.status, r.body)
	}
	if p := r.problem(t); p.Code != string(signing.CodeReplayedNonce) {
		t.Errorf("code = %s, want replayed_nonce", p.Code)
	}
	page, err := env.Service.List(context.Background(), "", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	list := page.Broadcasts
	if len(list) != 1 || queuedTasks(t, env, queue.QueuePlan) != 1 {
		t.Errorf("%d broadcasts and %d plan tasks, want 1 and 1", len(list), queuedTasks(t, env, queue.QueuePlan))
	}
	rejections := counterValue(t, env.Metrics, "pushgate_signature_rejections_total", "replayed_nonce")
	if rejections != 1 {
		t.Errorf("replayed_nonce rejections = %v, want 1", rejections)
	}
}

// counterValue returns the value of a gathered counter's series whose code
// label is code.
func counterValue(t *testing.T, g prometheus.Gatherer, name, code string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestIdempotency(t *testing.T) {
	env := gatewaytest.Start(t)
	register(t, env, "citizens", 1)
	body := `{"idempotency_key":"flood-001","audience":{"tokens":[{"platform":"fcm","token":"tok-citizens-00000"}]},"message":{"title":"Flood"}}`

	first := call(t, env, gatewaytest.Sender, "POST", "/v1/broadcasts", body)
	if first.status != http.StatusAccepted {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	again := call(t, env, gatewaytest.Sender, "POST", "/v1/broadcasts", body)
	if again.status != http.StatusOK {
		t.Fatalf("repeat: %d %s, want 200", again.status, again.body)
	}
	if string(first.body) != string(again.body) {
		t.Errorf("repeat answered %s, first %s", again.body, first.body)
	}

	changed := strings.Replace(body, "Flood", "Fire", 1)
	conflict := call(t, env, gatewaytest.Sender, "POST", "/v1/broadcasts", changed)
	if conflict.status != http.StatusConflict {
		t.Fatalf("changed body: %d %s, want 409", conflict.status, conflict.body)
	}
	if p := conflict.problem(t); p.Code != api.CodeIdempotencyConflict {
		t.Errorf("code = %s", p.Code)
	}

	// The idempotency key is scoped to the sender key: another key may
	// use the same one.
	other := call(t, env, gatewaytest.Wide, "POST", "/v1/broadcasts", body)
	if other.status != http.StatusAccepted {
		t.Errorf("same idempotency key, other sender: %d %s, want 202", other.status, other.body)
	}

	page, err := env.Service.List(context.Background(), "", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	list := page.Broadcasts
	if len(list) != 2 || queuedTasks(t, env, queue.QueuePlan) != 2 {
		t.Errorf("%d broadcasts and %d plan tasks, want 2 and 2", len(list), queuedTasks(t, env, queue.QueuePlan))
	}
}

func TestUnknownRoutesAndMethodsAreProblems(t *testing.T) {
	env := gatewaytest.Start(t)
	tests := []struct {
		name, key, method, path string
		want                    int
		wantCode, wantAllow     string
	}{
		{"unknown path", "", "GET", "/nope", 404, "not_found", ""},
		{"unknown v1 path", gatewaytest.Admin, "GET", "/v1/nope", 404, "not_found", ""},
		{"wrong method", gatewaytest.Admin, "DELETE", "/v1/kill", 405, "method_not_allowed", "GET, HEAD, POST"},
		{"wrong method unsigned", "", "PUT", "/healthz", 405, "method_not_allowed", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, env, tt.key, tt.method, tt.path, "")
			if r.status != tt.want {
				t.Fatalf("status = %d, want %d; body %s", r.status, tt.want, r.body)
			}
			if p := r.problem(t); p.Code != tt.wantCode {
				t.Errorf("code = %s, want %s", p.Code, tt.wantCode)
			}
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

func TestDeviceTokensAreNotLogged(t *testing.T) {
	env := gatewaytest.Start(t)
	const token = "SECRET0TOKEN0VALUE"
	for _, c := range []struct{ method, body string }{
		{"PUT", `{"topics":["citizens"]}`},
		{"DELETE", ""},
		{"DELETE", ""}, // 404
		{"PUT", `{"topics":["bad topic"]}`},
	} {
		call(t, env, gatewaytest.Registrar, c.method, "/v1/devices/fcm/"+token, c.body)
	}
	call(t, env, gatewaytest.Sender, "PUT", "/v1/devices/fcm/"+token, `{"topics":[]}`) // 403
	logs := env.Logs.String()
	if strings.Contains(logs, token) {
		t.Errorf("the device token reached the log:\n%s", logs)
	}
	if !strings.Contains(logs, `route="PUT /v1/devices/{platform}/{token}"`) || !strings.Contains(logs, "key_id="+gatewaytest.Registrar) {
		t.Errorf("log lacks the route pattern or key_id:\n%s", logs)
	}
}

// TestInfrastructureFailureIsUnavailable points the gateway at a Redis
// that does not answer: clients get 503 unavailable with no detail.
func TestInfrastructureFailureIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String() // nobody answers there once closed
	ln.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	keys := queue.NewKeys("pgt")
	pub, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := signing.ParseKeyring(fmt.Appendf(nil, "keys:\n  - id: a\n    public_key: %s\n    roles: [admin]\n",
		base64.StdEncoding.EncodeToString(pub)))
	if err != nil {
		t.Fatal(err)
	}
	_, vkey, err := controllog.GenerateKey("pushgate.test/control")
	if err != nil {
		t.Fatal(err)
	}
	logKey, _ := note.NewVerifier(vkey)
	// A view of the control log that never started: Redis never answered.
	control, err := queue.NewControl(queue.ControlConfig{Redis: rdb, Keys: keys, Keyring: ring,
		Profile: signing.DefaultProfile(), Policy: queue.DefaultPolicy(), LogKey: logKey})
	if err != nil {
		t.Fatal(err)
	}
	ver := signing.NewVerifier(signing.VerifierConfig{Profile: signing.DefaultProfile(), Keys: ring,
		Revocations: control, Replay: queue.NewReplayGuard(rdb, keys)})
	svc, err := queue.NewService(queue.Config{Redis: rdb, Keys: keys, Verifier: ver, Control: control, Policy: queue.DefaultPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	var logs gatewaytest.Buffer
	gw, err := gateway.New(gateway.Config{Service: svc, Verifier: ver, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	defer srv.Close()

	for _, path := range []string{"/v1/kill", "/readyz"} {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if err := (&signing.Signer{KeyID: "a", Key: priv}).Sign(req, nil); err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r := response{status: resp.StatusCode, header: resp.Header, body: b}
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("%s: status %d, want 503; %s", path, r.status, b)
		}
		if p := r.problem(t); p.Code != api.CodeUnavailable || p.Detail != "" {
			t.Errorf("%s: problem %+v, want unavailable without detail", path, p)
		}
		if strings.Contains(string(b), addr) {
			t.Errorf("%s: the answer names the Redis address: %s", path, b)
		}
	}
	if !strings.Contains(logs.String(), "request failed") {
		t.Errorf("the failure was not logged:\n%s", logs.String())
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	if _, err := gateway.New(gateway.Config{}); err == nil {
		t.Error("New without a Service and a Verifier succeeded")
	}
}

func TestNewHTTPServerHasTimeouts(t *testing.T) {
	s := gateway.NewHTTPServer("127.0.0.1:0", http.NotFoundHandler())
	if s.ReadHeaderTimeout == 0 || s.ReadTimeout == 0 || s.WriteTimeout < 10*time.Second || s.IdleTimeout == 0 || s.MaxHeaderBytes == 0 {
		t.Errorf("server = %+v, want every timeout and a header limit", s)
	}
}

// TestRequestLogLevels checks the request lines an operator reads: a
// request that succeeded is an access line at debug; a refused one is at
// info, with its problem code and, once the signature verified, the key.
func TestRequestLogLevels(t *testing.T) {
	env := gatewaytest.Start(t)
	call(t, env, gatewaytest.Admin, "GET", "/v1/kill", "")     // 200
	call(t, env, gatewaytest.Sender, "POST", "/v1/kill", `{}`) // 403: the sender is no admin
	call(t, env, "", "GET", "/v1/nope", "")                    // 404, unsigned
	lines := strings.Split(env.Logs.String(), "\n")
	want := []struct{ parts []string }{
		{[]string{"level=DEBUG", `msg=request`, `route="GET /v1/kill"`, "status=200", "key_id=" + gatewaytest.Admin}},
		{[]string{"level=INFO", `msg=request`, `route="POST /v1/kill"`, "status=403", "key_id=" + gatewaytest.Sender, "problem=forbidden"}},
		{[]string{"level=INFO", `msg=request`, "route=unmatched", "status=404", "problem=not_found"}},
	}
	for _, w := range want {
		found := false
		for _, line := range lines {
			ok := true
			for _, p := range w.parts {
				ok = ok && strings.Contains(line, p)
			}
			found = found || ok
		}
		if !found {
			t.Errorf("no log line with %q in:\n%s", w.parts, env.Logs.String())
		}
	}
}
