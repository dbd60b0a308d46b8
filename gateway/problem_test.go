package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

func TestStatusOfEveryCode(t *testing.T) {
	tests := []struct {
		give string
		want int
	}{
		{string(signing.CodeMissingSignature), 401},
		{string(signing.CodeMalformedSignature), 401},
		{string(signing.CodeMissingComponent), 401},
		{string(signing.CodeUnknownKey), 401},
		{string(signing.CodeRevokedKey), 401},
		{string(signing.CodeStaleRequest), 401},
		{string(signing.CodeExpiredSignature), 401},
		{string(signing.CodeReplayedNonce), 401},
		{string(signing.CodeDigestMismatch), 401},
		{string(signing.CodeBadSignature), 401},
		{queue.CodeMalformedJSON, 400},
		{queue.CodeUnknownField, 400},
		{queue.CodeInvalidAudience, 400},
		{queue.CodeInvalidTTL, 400},
		{queue.CodeTooManyTokens, 400},
		{queue.CodeInvalidMessage, 400},
		{queue.CodeInvalidDevice, 400},
		{queue.CodeInvalidTopic, 400},
		{queue.CodeInvalidIdemKey, 400},
		{queue.CodeInvalidScope, 400},
		{queue.CodeInvalidRecall, 400},
		{CodeInvalidQuery, 400},
		{CodeInvalidReason, 400},
		{queue.CodeForbidden, 403},
		{queue.CodeTopicNotAllowed, 403},
		{queue.CodeAudienceOverCap, 403},
		{queue.CodeNotFound, 404},
		{CodeMethodNotAllowed, 405},
		{queue.CodeIdempotencyConflict, 409},
		{queue.CodeNotResumable, 409},
		{queue.CodeInvalidState, 409},
		{CodeBodyTooLarge, 413},
		{CodeUnsupportedMediaType, 415},
		{CodeInternal, 500},
		{CodeNotImplemented, 501},
		{queue.CodeKillSwitchActive, 503},
		{CodeUnavailable, 503},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, title, ok := statusOf(tt.give)
			if !ok || got != tt.want || title == "" {
				t.Errorf("statusOf(%q) = %d, %q, %t; want %d", tt.give, got, title, ok, tt.want)
			}
		})
	}
}

func TestProblemOf(t *testing.T) {
	tests := []struct {
		name         string
		give         error
		wantCode     string
		wantStatus   int
		wantInternal bool
	}{
		{"signature refusal", fmt.Errorf("verify: %w", &signing.Error{Code: signing.CodeBadSignature, Detail: "no"}),
			"bad_signature", 401, false},
		{"service refusal", fmt.Errorf("submit: %w", &queue.Error{Code: queue.CodeTopicNotAllowed, Detail: "no"}),
			"topic_not_allowed", 403, false},
		{"gateway refusal", &Problem{Code: CodeBodyTooLarge, Detail: "big"}, "body_too_large", 413, false},
		{"redis down", fmt.Errorf("read broadcast: %w", errors.New("dial tcp 10.0.0.7:6379: connection refused")),
			"unavailable", 503, true},
		{"code missing from the table", &queue.Error{Code: "brand_new", Detail: "x"}, "internal", 500, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, internal := problemOf(tt.give)
			if p.Code != tt.wantCode || p.Status != tt.wantStatus || internal != tt.wantInternal {
				t.Errorf("problemOf = %+v, %t; want %s %d %t", p, internal, tt.wantCode, tt.wantStatus, tt.wantInternal)
			}
			if internal && p.Detail != "" {
				t.Errorf("an internal failure carries detail %q", p.Detail)
			}
		})
	}
}

// FuzzBroadcastBody feeds arbitrary bodies through the handler's decode
// and validation, and the problem mapping and writing: nothing panics, and
// every refusal is a 4xx problem with a known code and a JSON document.
func FuzzBroadcastBody(f *testing.F) {
	for _, seed := range []string{
		`{"audience":{"topic":"citizens"},"message":{"title":"t","body":"b","ttl":"15m","priority":"high"}}`,
		`{"idempotency_key":"k-1","audience":{"all":true},"message":{"body":"b","data":{"url":"x"}}}`,
		`{"audience":{"tokens":[{"platform":"fcm","token":"t"},{"platform":"apns","token":"ab"}]},"message":{"title":"t"}}`,
		`{"audience":{"topic":"a","all":true},"message":{"title":"t"}}`,
		`{"audience":{"tokens":[]},"message":{"title":"t"}}`,
		`{"audience":{"topic":"citizens"},"message":{"title":"t","ttl":"-1s"}}`,
		`{"audience":{"topic":"citizens"},"message":{"title":"t"},"x":1}`,
		`{"audience":{"topic":"citizens"},"message":{"title":"t","data":{"aps":"x"}}}`,
		`{"audience":{"topic":7}}`,
		`{} {}`,
		`[`,
		`null`,
		``,
		"\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseBroadcast(body, 24*time.Hour)
		if err == nil {
			if req == nil {
				t.Fatal("no request and no error")
			}
			return
		}
		p, internal := problemOf(err)
		if internal {
			t.Fatalf("a body caused an internal failure: %v", err)
		}
		if _, _, ok := statusOf(p.Code); !ok || p.Status < 400 || p.Status > 499 {
			t.Fatalf("problem %+v for %v", p, err)
		}
		w := httptest.NewRecorder()
		writeProblem(w, p)
		if w.Code != p.Status || w.Header().Get("Content-Type") != ProblemContentType {
			t.Fatalf("wrote %d %q", w.Code, w.Header().Get("Content-Type"))
		}
		var got Problem
		dec := json.NewDecoder(w.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil || got != *p {
			t.Fatalf("wrote %+v (%v), want %+v", got, err, p)
		}
		if !strings.HasPrefix(got.Type, ProblemTypeBase) || http.StatusText(got.Status) == "" {
			t.Fatalf("problem %+v", got)
		}
	})
}
