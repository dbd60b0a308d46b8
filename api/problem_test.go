package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

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
		{string(signing.CodeWrongAuthority), 401},
		{CodeMalformedJSON, 400},
		{CodeUnknownField, 400},
		{CodeInvalidAudience, 400},
		{CodeInvalidTTL, 400},
		{CodeTooManyTokens, 400},
		{CodeInvalidMessage, 400},
		{CodeInvalidDevice, 400},
		{CodeInvalidTopic, 400},
		{CodeInvalidIdemKey, 400},
		{CodeInvalidScope, 400},
		{CodeInvalidRecall, 400},
		{CodeInvalidQuery, 400},
		{CodeInvalidReason, 400},
		{CodeNonCanonicalPath, 400},
		{CodeDuplicateKey, 400},
		{CodeForbidden, 403},
		{CodeTopicNotAllowed, 403},
		{CodeAudienceOverCap, 403},
		{CodeDeviceNotInScope, 403},
		{CodeDeviceQuotaExceeded, 403},
		{CodeSelfApproval, 403},
		{CodeDuplicateApproval, 409},
		{CodeApprovalMismatch, 409},
		{CodeApprovalExpired, 409},
		{CodeReachBudgetExceeded, 429},
		{CodeNotFound, 404},
		{CodeMethodNotAllowed, 405},
		{CodeIdempotencyConflict, 409},
		{CodeNotResumable, 409},
		{CodeInvalidState, 409},
		{CodeNotRecallable, 409},
		{CodeBodyTooLarge, 413},
		{CodeUnsupportedMediaType, 415},
		{CodeBodyTimeout, 408},
		{CodeProviderDegraded, 503},
		{CodeInternal, 500},
		{CodeKillSwitchActive, 503},
		{CodeUnavailable, 503},
		{CodeControlLogInconsistent, 503},
		{CodeControlLogUnavailable, 503},
		{CodeRedisDataLost, 503},
	}
	if len(tests) != len(Codes()) {
		t.Errorf("the table has %d codes, this test %d: add the new code here with its status", len(Codes()), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, title, ok := StatusOf(tt.give)
			if !ok || got != tt.want || title == "" {
				t.Errorf("StatusOf(%q) = %d, %q, %t; want %d", tt.give, got, title, ok, tt.want)
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
		{"service refusal", fmt.Errorf("submit: %w", &Error{Code: CodeTopicNotAllowed, Detail: "no"}),
			"topic_not_allowed", 403, false},
		{"problem from a client", &Problem{Code: CodeBodyTooLarge, Detail: "big"}, "body_too_large", 413, false},
		{"redis down", fmt.Errorf("read broadcast: %w", errors.New("dial tcp 10.0.0.7:6379: connection refused")),
			"unavailable", 503, true},
		{"code missing from the table", &Error{Code: "brand_new", Detail: "x"}, "internal", 500, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, internal := ProblemOf(tt.give)
			if p.Code != tt.wantCode || p.Status != tt.wantStatus || internal != tt.wantInternal {
				t.Errorf("problemOf = %+v, %t; want %s %d %t", p, internal, tt.wantCode, tt.wantStatus, tt.wantInternal)
			}
			if internal && p.Detail != "" {
				t.Errorf("an internal failure carries detail %q", p.Detail)
			}
		})
	}
}

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
		req, err := ParseBroadcastRequest(body, 24*time.Hour)
		if err == nil {
			if req == nil {
				t.Fatal("no request and no error")
			}
			return
		}
		p, internal := ProblemOf(err)
		if internal {
			t.Fatalf("a body caused an internal failure: %v", err)
		}
		if _, _, ok := StatusOf(p.Code); !ok || p.Status < 400 || p.Status > 499 {
			t.Fatalf("problem %+v for %v", p, err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var got Problem
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil || got != *p {
			t.Fatalf("encoded %+v (%v), want %+v", got, err, p)
		}
		if !strings.HasPrefix(got.Type, ProblemTypeBase) || http.StatusText(got.Status) == "" {
			t.Fatalf("problem %+v", got)
		}
	})
}

func TestReasonsTop(t *testing.T) {
	r := &Reasons{
		Retried: map[string]int64{"apns/TooManyProviderTokenUpdates": 60, "fcm/UNAUTHENTICATED": 60},
		Expired: map[string]int64{"apns/TooManyProviderTokenUpdates": 30},
		Failed:  map[string]int64{"fcm/THIRD_PARTY_AUTH_ERROR": 2},
	}
	// Reasons that ended devices come first, however many retries the
	// others counted.
	want := "apns/TooManyProviderTokenUpdates expired=30, fcm/THIRD_PARTY_AUTH_ERROR failed=2, apns/TooManyProviderTokenUpdates retried=60"
	if got := r.Top(3); got != want {
		t.Errorf("Top(3) = %q, want %q", got, want)
	}
	if got := (*Reasons)(nil).Top(3); got != "" {
		t.Errorf("Top of nil = %q", got)
	}
}
