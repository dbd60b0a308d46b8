package gatewaytest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
)

const status = `{"id":"b01","state":"queued","key_id":"sender","audience":"topic","topic":"citizens","ttl":"15m0s",
"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","counters":{"targeted":0,"planned":0,"sent":0,
"failed":0,"expired":0,"invalid_token":0,"skipped_duplicate":0,"rate_limited_retries":0,"retries":0,"cancelled":0,
"uncertain":0,"throttled":0,"held":0,"capped":0,"recalled":0,"recall_failed":0,"provider_paused":0}}`

func problemBody(code string) string {
	b := fmt.Sprintf(`{"type":"%s%s","title":"t","status":%d,"code":%q}`, api.ProblemTypeBase, code, statusOf(code), code)
	return b
}

func statusOf(code string) int {
	s, _, _ := api.StatusOf(code)
	return s
}

// TestContractCatchesMismatches feeds exchanges that depart from the
// document, and some that do not, to Contract.Check.
func TestContractCatchesMismatches(t *testing.T) {
	c, err := gatewaytest.LoadContract()
	if err != nil {
		t.Fatal(err)
	}
	signed := func(r *http.Request) {
		r.Header.Set("Signature-Input", `pushgate=("@method" "@authority" "@path");created=1;keyid="k";alg="ed25519";nonce="n";tag="pushgate"`)
		r.Header.Set("Signature", "pushgate=:AAAA:")
	}
	tests := []struct {
		name        string
		method      string
		target      string
		reqBody     string
		status      int
		contentType string
		body        string
		want        string // a substring of the findings; "" for none
	}{
		{"a status", "GET", "/v1/broadcasts/b01", "", 200, "application/json", status, ""},
		{"a required field missing", "GET", "/v1/broadcasts/b01", "", 200, "application/json",
			strings.Replace(status, `"key_id":"sender",`, "", 1), "key_id"},
		{"an undocumented field", "GET", "/v1/kill", "", 200, "application/json", `{"kills":[],"paused":true}`, "paused"},
		{"an undocumented status", "POST", "/v1/kill", "", http.StatusTeapot, api.ProblemContentType,
			`{"type":"x","title":"t","status":418,"code":"internal"}`, "418"},
		{"a problem with an unknown code", "GET", "/v1/kill", "", 400, api.ProblemContentType,
			problemBody("no_such_code"), `"$.code"`},
		{"a problem", "GET", "/v1/kill", "", 403, api.ProblemContentType, problemBody(api.CodeForbidden), ""},
		{"a problem with another status than its code's", "GET", "/v1/kill", "", 401, api.ProblemContentType,
			problemBody(api.CodeForbidden), `"forbidden"`},
		{"a refused unknown field", "POST", "/v1/kill", `{"scope":"global","reason":"r","x":1}`, 400, api.ProblemContentType,
			problemBody(api.CodeUnknownField), ""},
		{"an accepted unknown field", "POST", "/v1/resume", `{"scope":"global","x":1}`, 200, "application/json",
			`{"scope":"global","version":3}`, "accepted a request the document refuses"},
		{"an unknown route answered 404", "GET", "/v1/nothing", "", 404, api.ProblemContentType, problemBody(api.CodeNotFound), ""},
		{"an unknown route answered 200", "GET", "/v1/nothing", "", 200, "application/json", `{}`, "does not describe"},
		{"health", "GET", "/healthz", "", 200, "application/json", `{"status":"ok"}`, ""},
		{"health with the wrong value", "GET", "/healthz", "", 200, "application/json", `{"status":"fine"}`, "status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "http://127.0.0.1:8080"+tt.target, strings.NewReader(tt.reqBody))
			if strings.HasPrefix(tt.target, "/v1/") {
				signed(r)
			}
			if tt.reqBody != "" {
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Content-Digest", "sha-256=:AAAA:")
			}
			header := http.Header{"Content-Type": {tt.contentType}}
			found := c.Check(r, []byte(tt.reqBody), tt.status, header, []byte(tt.body))
			joined := strings.Join(found, "\n")
			if tt.want == "" {
				if len(found) > 0 {
					t.Errorf("findings for a conforming exchange:\n%s", joined)
				}
				return
			}
			if !strings.Contains(joined, tt.want) {
				t.Errorf("findings %q do not mention %q", joined, tt.want)
			}
			where := fmt.Sprintf("%s %s -> %d", tt.method, tt.target, tt.status)
			for _, f := range found {
				if !strings.HasPrefix(f, where) {
					t.Errorf("finding %q does not start with %q", f, where)
				}
			}
		})
	}
}

// recordingTB records what CheckContract reports instead of failing.
type recordingTB struct {
	testing.TB
	mu       sync.Mutex
	errs     []string
	cleanups []func()
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// TestCheckContractReports serves a wrong answer twice through the
// middleware and sees it reported once at cleanup, with the method, path,
// status and count; the client gets the answer unchanged.
func TestCheckContractReports(t *testing.T) {
	tb := &recordingTB{TB: t}
	h := gatewaytest.CheckContract(tb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated) // the document says 200
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	for range 2 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		if rec.Code != http.StatusCreated || rec.Body.String() != `{"status":"ok"}` {
			t.Errorf("the client got %d %q", rec.Code, rec.Body)
		}
	}
	if len(tb.errs) > 0 {
		t.Fatalf("reported before cleanup: %q", tb.errs)
	}
	for _, f := range tb.cleanups {
		f()
	}
	if len(tb.errs) != 1 || !strings.Contains(tb.errs[0], "(2 times): GET /healthz -> 201") {
		t.Errorf("reported %q, want one finding for GET /healthz -> 201, seen twice", tb.errs)
	}
}

// BenchmarkCheck measures what checking one exchange costs: a signed
// broadcast accepted with its answer.
func BenchmarkCheck(b *testing.B) {
	c, err := gatewaytest.LoadContract()
	if err != nil {
		b.Fatal(err)
	}
	body := `{"audience":{"topic":"citizens"},"message":{"title":"t","body":"b","ttl":"15m"}}`
	answer := []byte(`{"id":"b01","state":"queued","status_url":"/v1/broadcasts/b01"}`)
	header := http.Header{"Content-Type": {"application/json"}, "Location": {"/v1/broadcasts/b01"}}
	for b.Loop() {
		r := httptest.NewRequest("POST", "http://127.0.0.1:8080/v1/broadcasts", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Content-Digest", "sha-256=:AAAA:")
		r.Header.Set("Signature-Input", `pushgate=("@method");created=1;keyid="k";alg="ed25519";nonce="n";tag="pushgate"`)
		r.Header.Set("Signature", "pushgate=:AAAA:")
		if f := c.Check(r, []byte(body), http.StatusAccepted, header, answer); len(f) > 0 {
			b.Fatal(f)
		}
	}
}
