package api

import (
	"strings"
	"testing"
)

func TestParseApprovalRequests(t *testing.T) {
	d := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		give string
		path string
		want string // code, "" for accepted
	}{
		{"valid", `{"broadcast_id":"b01","envelope_sha256":"` + d + `"}`, "b01", ""},
		{"another broadcast", `{"broadcast_id":"b02","envelope_sha256":"` + d + `"}`, "b01", CodeApprovalMismatch},
		{"short digest", `{"broadcast_id":"b01","envelope_sha256":"abc"}`, "b01", CodeMalformedJSON},
		{"uppercase digest", `{"broadcast_id":"b01","envelope_sha256":"` + strings.ToUpper(d) + `"}`, "b01", CodeMalformedJSON},
		{"unknown field", `{"broadcast_id":"b01","envelope_sha256":"` + d + `","by":"me"}`, "b01", CodeUnknownField},
	}
	for _, tt := range tests {
		_, err := ParseApprovalRequest([]byte(tt.give), tt.path)
		if got := CodeOf(err); got != tt.want {
			t.Errorf("%s: ParseApprovalRequest = %v, want code %q", tt.name, err, tt.want)
		}
		action := strings.NewReplacer("broadcast_id", "action_id", "envelope_sha256", "request_sha256", `"b0`, `"a0`).Replace(tt.give)
		_, err = ParseActionApprovalRequest([]byte(action), "a"+strings.TrimPrefix(tt.path, "b"))
		if got := CodeOf(err); got != tt.want {
			t.Errorf("%s: ParseActionApprovalRequest(%s) = %v, want code %q", tt.name, action, err, tt.want)
		}
	}
}

// FuzzApprovalRequest feeds arbitrary bodies to both approval parsers:
// nothing panics, every refusal has a code in the table, and what is
// accepted names the path's target and a well-formed digest.
func FuzzApprovalRequest(f *testing.F) {
	d := strings.Repeat("0f", 32)
	for _, seed := range []string{
		`{"broadcast_id":"b01","envelope_sha256":"` + d + `"}`,
		`{"action_id":"a01","request_sha256":"` + d + `"}`,
		`{"broadcast_id":"b01"}`, `{"envelope_sha256":7}`, `null`, ``, `[]`,
	} {
		f.Add([]byte(seed), "b01")
	}
	f.Fuzz(func(t *testing.T, body []byte, id string) {
		if r, err := ParseApprovalRequest(body, id); err != nil {
			if _, _, ok := StatusOf(CodeOf(err)); !ok {
				t.Fatalf("refusal %v has no code in the table", err)
			}
		} else if r.BroadcastID != id || !validDigest(r.EnvelopeSHA256) {
			t.Fatalf("accepted %+v for path %q", r, id)
		}
		if r, err := ParseActionApprovalRequest(body, id); err != nil {
			if _, _, ok := StatusOf(CodeOf(err)); !ok {
				t.Fatalf("refusal %v has no code in the table", err)
			}
		} else if r.ActionID != id || !validDigest(r.RequestSHA256) {
			t.Fatalf("accepted %+v for path %q", r, id)
		}
	})
}
