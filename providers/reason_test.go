package providers

import (
	"regexp"
	"testing"
)

func TestResultCode(t *testing.T) {
	tests := []struct {
		give Result
		want string
	}{
		{Result{Class: Sent}, ""},
		{Result{Class: Cancelled, Reason: "gate closed"}, CodeCancelled},
		{Result{Class: Retryable, Reason: "TooManyProviderTokenUpdates"}, "TooManyProviderTokenUpdates"},
		{Result{Class: InvalidToken, Reason: "Unregistered"}, "Unregistered"},
		{Result{Class: Retryable, Reason: "QUOTA_EXCEEDED"}, "QUOTA_EXCEEDED"},
		{Result{Class: Retryable, Reason: "UNAUTHENTICATED"}, "UNAUTHENTICATED"},
		{Result{Class: Retryable, Reason: "HTTP 502"}, "HTTP 502"},
		{Result{Class: Retryable, Reason: "HTTP 0502"}, "HTTP 502"},
		{Result{Class: Retryable, Reason: "HTTP 9999"}, CodeOther},
		{Result{Class: Retryable, Reason: "transport: connection reset by peer"}, CodeTransport},
		{Result{Class: Permanent, Reason: "oauth2 token refused: invalid_grant"}, CodeOAuth2Refused},
		{Result{Class: Retryable, Reason: "oauth2 token: 503 Service Unavailable"}, CodeOAuth2Unavailable},
		{Result{Class: Permanent, Reason: "fcm sdk: bad"}, CodeSDK},
		{Result{Class: Permanent, Reason: messageRefused + "ttl is negative"}, CodeMessage},
		{Result{Class: InvalidToken, Reason: emptyToken}, CodeEmptyToken},
		// A status a server made up stays out of the counters' names.
		{Result{Class: Permanent, Reason: "SOMETHING_A_PROXY_SAID"}, CodeOther},
		{Result{Class: Retryable, Reason: ""}, CodeOther},
	}
	for _, tt := range tests {
		if got := tt.give.Code(); got != tt.want {
			t.Errorf("Code(%+v) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

// codeShape is what every code looks like: letters, digits and
// underscores, or "HTTP" and a status.
var codeShape = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9_]{0,39}|HTTP [1-5][0-9][0-9])$`)

// FuzzResultCode checks that whatever a provider answers, the code is one
// of a bounded set: a known reason, an HTTP status or a Code constant.
func FuzzResultCode(f *testing.F) {
	for _, s := range []string{"BadDeviceToken", "HTTP 503", "transport: x", "UNREGISTERED", "HTTP -1", "oauth2 token: ", "\x00"} {
		f.Add(s, uint8(Retryable))
	}
	f.Fuzz(func(t *testing.T, reason string, class uint8) {
		c := Class(class % 6)
		code := Result{Class: c, Reason: reason}.Code()
		if code == "" {
			if c != Sent {
				t.Fatalf("empty code for %q", reason)
			}
			return
		}
		if !codeShape.MatchString(code) {
			t.Fatalf("code %q for %q is not a bounded code", code, reason)
		}
		_, apple := apnsClasses[code]
		known := apple || fcmCodes[code] || rpcStatuses[code] || len(code) > 5 && code[:5] == "HTTP " ||
			code == CodeTransport || code == CodeOAuth2Refused || code == CodeOAuth2Unavailable ||
			code == CodeSDK || code == CodeMessage || code == CodeEmptyToken || code == CodeCancelled || code == CodeOther
		if !known {
			t.Fatalf("code %q for %q is in no known set", code, reason)
		}
	})
}
