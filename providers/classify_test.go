package providers

import (
	"fmt"
	"testing"
	"time"
)

// fcmErrorJSON is a google.rpc.Status body as FCM sends it, with an
// FcmError detail when code is set and a BadRequest detail naming field
// when field is set.
func fcmErrorJSON(status int, rpcStatus, code, field string) []byte {
	var details []string
	if code != "" {
		details = append(details, fmt.Sprintf(`{"@type":%q,"errorCode":%q}`, fcmErrorType, code))
	}
	if field != "" {
		details = append(details, fmt.Sprintf(`{"@type":%q,"fieldViolations":[{"field":%q,"description":"bad"}]}`, badRequestType, field))
	}
	d := ""
	for i, s := range details {
		if i > 0 {
			d += ","
		}
		d += s
	}
	return fmt.Appendf(nil, `{"error":{"code":%d,"message":"m","status":%q,"details":[%s]}}`, status, rpcStatus, d)
}

func TestClassifyFCM(t *testing.T) {
	const ra = 5 * time.Second
	tests := []struct {
		name string
		give fcmAnswer
		want Result
	}{
		{"UNREGISTERED", fcmAnswer{404, fcmErrorJSON(404, "NOT_FOUND", "UNREGISTERED", "")}, Result{Class: InvalidToken, Reason: "UNREGISTERED"}},
		{"SENDER_ID_MISMATCH", fcmAnswer{403, fcmErrorJSON(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "")}, Result{Class: InvalidToken, Reason: "SENDER_ID_MISMATCH"}},
		{"INVALID_ARGUMENT about the token", fcmAnswer{400, fcmErrorJSON(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "")}, Result{Class: InvalidToken, Reason: "INVALID_ARGUMENT"}},
		{"INVALID_ARGUMENT naming message.token", fcmAnswer{400, fcmErrorJSON(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.token")}, Result{Class: InvalidToken, Reason: "INVALID_ARGUMENT"}},
		{"INVALID_ARGUMENT naming another field", fcmAnswer{400, fcmErrorJSON(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.android.ttl")}, Result{Class: Permanent, Reason: "INVALID_ARGUMENT"}},
		{"INVALID_ARGUMENT without FcmError", fcmAnswer{400, fcmErrorJSON(400, "INVALID_ARGUMENT", "", "message.data[0].value")}, Result{Class: Permanent, Reason: "INVALID_ARGUMENT"}},
		{"QUOTA_EXCEEDED", fcmAnswer{429, fcmErrorJSON(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "")}, Result{Class: Retryable, Reason: "QUOTA_EXCEEDED", RetryAfter: ra, ProviderWide: true}},
		{"UNAVAILABLE", fcmAnswer{503, fcmErrorJSON(503, "UNAVAILABLE", "UNAVAILABLE", "")}, Result{Class: Retryable, Reason: "UNAVAILABLE", RetryAfter: ra, ProviderWide: true}},
		{"INTERNAL", fcmAnswer{500, fcmErrorJSON(500, "INTERNAL", "INTERNAL", "")}, Result{Class: Retryable, Reason: "INTERNAL", RetryAfter: ra}},
		{"THIRD_PARTY_AUTH_ERROR", fcmAnswer{401, fcmErrorJSON(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "")}, Result{Class: Permanent, Reason: "THIRD_PARTY_AUTH_ERROR", Credential: true}},
		{"APNS_AUTH_ERROR", fcmAnswer{401, fcmErrorJSON(401, "UNAUTHENTICATED", "APNS_AUTH_ERROR", "")}, Result{Class: Permanent, Reason: "APNS_AUTH_ERROR", Credential: true}},
		{"UNSPECIFIED_ERROR", fcmAnswer{500, fcmErrorJSON(500, "UNKNOWN", "UNSPECIFIED_ERROR", "")}, Result{Class: Retryable, Reason: "UNSPECIFIED_ERROR", RetryAfter: ra}},
		{"unknown FcmError code", fcmAnswer{400, fcmErrorJSON(400, "FAILED_PRECONDITION", "SOMETHING_NEW", "")}, Result{Class: Retryable, Reason: "SOMETHING_NEW", RetryAfter: ra}},
		{"401 of our access token", fcmAnswer{401, fcmErrorJSON(401, "UNAUTHENTICATED", "", "")}, Result{Class: Retryable, Reason: "UNAUTHENTICATED", RetryAfter: ra, Credential: true}},
		{"403 of our service account", fcmAnswer{403, fcmErrorJSON(403, "PERMISSION_DENIED", "", "")}, Result{Class: Permanent, Reason: "PERMISSION_DENIED", Credential: true}},
		{"404 of a wrong project", fcmAnswer{404, fcmErrorJSON(404, "NOT_FOUND", "", "")}, Result{Class: Permanent, Reason: "NOT_FOUND"}},
		{"429 without detail", fcmAnswer{429, fcmErrorJSON(429, "RESOURCE_EXHAUSTED", "", "")}, Result{Class: Retryable, Reason: "RESOURCE_EXHAUSTED", RetryAfter: ra, ProviderWide: true}},
		{"502 from a proxy, not JSON", fcmAnswer{502, []byte("<html>bad gateway</html>")}, Result{Class: Retryable, Reason: "HTTP 502", RetryAfter: ra}},
		{"400 not JSON", fcmAnswer{400, []byte("nope")}, Result{Class: Permanent, Reason: "HTTP 400"}},
		{"503 not JSON", fcmAnswer{503, []byte("overloaded")}, Result{Class: Retryable, Reason: "HTTP 503", RetryAfter: ra, ProviderWide: true}},
		{"429 UNREGISTERED stays the token's", fcmAnswer{429, fcmErrorJSON(429, "NOT_FOUND", "UNREGISTERED", "")}, Result{Class: InvalidToken, Reason: "UNREGISTERED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classifyFCM(tt.give.status, tt.give.body, ra)
			if got != tt.want {
				t.Errorf("classifyFCM(%d, %s) = %+v, want %+v", tt.give.status, tt.give.body, got, tt.want)
			}
		})
	}
}

// fcmAnswer is an FCM error response.
type fcmAnswer struct {
	status int
	body   []byte
}

// TestClassifyAPNs covers every reason of Apple's table, with the status
// Apple sends it with.
func TestClassifyAPNs(t *testing.T) {
	const ra = 5 * time.Second
	tests := []struct {
		give apnsAnswer
		want Class
	}{
		{apnsAnswer{400, "BadCollapseId"}, Permanent},
		{apnsAnswer{400, "BadDeviceToken"}, InvalidToken},
		{apnsAnswer{400, "BadExpirationDate"}, Permanent},
		{apnsAnswer{400, "BadMessageId"}, Permanent},
		{apnsAnswer{400, "BadPriority"}, Permanent},
		{apnsAnswer{400, "BadTopic"}, Permanent},
		{apnsAnswer{400, "DeviceTokenNotForTopic"}, InvalidToken},
		{apnsAnswer{400, "DuplicateHeaders"}, Permanent},
		{apnsAnswer{400, "IdleTimeout"}, Retryable},
		{apnsAnswer{400, "InvalidPushType"}, Permanent},
		{apnsAnswer{400, "MissingDeviceToken"}, InvalidToken},
		{apnsAnswer{400, "MissingTopic"}, Permanent},
		{apnsAnswer{400, "PayloadEmpty"}, Permanent},
		{apnsAnswer{400, "TopicDisallowed"}, Permanent},
		{apnsAnswer{403, "BadCertificate"}, Permanent},
		{apnsAnswer{403, "BadCertificateEnvironment"}, Permanent},
		{apnsAnswer{403, "ExpiredProviderToken"}, Retryable},
		{apnsAnswer{403, "Forbidden"}, Permanent},
		{apnsAnswer{403, "InvalidProviderToken"}, Retryable},
		{apnsAnswer{403, "MissingProviderToken"}, Permanent},
		{apnsAnswer{403, "UnrelatedKeyIdInToken"}, Permanent},
		{apnsAnswer{403, "BadEnvironmentKeyIdInToken"}, Permanent},
		{apnsAnswer{404, "BadPath"}, Permanent},
		{apnsAnswer{405, "MethodNotAllowed"}, Permanent},
		{apnsAnswer{410, "ExpiredToken"}, InvalidToken},
		{apnsAnswer{410, "Unregistered"}, InvalidToken},
		{apnsAnswer{413, "PayloadTooLarge"}, Permanent},
		{apnsAnswer{429, "TooManyProviderTokenUpdates"}, Retryable},
		{apnsAnswer{429, "TooManyRequests"}, Retryable},
		{apnsAnswer{500, "InternalServerError"}, Retryable},
		{apnsAnswer{503, "ServiceUnavailable"}, Retryable},
		{apnsAnswer{503, "Shutdown"}, Retryable},
		// Reasons Apple may add later: by status.
		{apnsAnswer{410, "SomethingNew"}, InvalidToken},
		{apnsAnswer{429, "SomethingNew"}, Retryable},
		{apnsAnswer{502, ""}, Retryable},
		{apnsAnswer{400, "SomethingNew"}, Permanent},
		{apnsAnswer{403, "SomethingNew"}, Permanent},
	}
	inTable := 0
	for _, tt := range tests {
		if _, ok := apnsClasses[tt.give.reason]; ok {
			inTable++
		}
		t.Run(fmt.Sprintf("%d_%s", tt.give.status, tt.give.reason), func(t *testing.T) {
			got := classifyAPNs(tt.give.status, tt.give.reason, ra)
			if got.Class != tt.want {
				t.Errorf("class %v, want %v", got.Class, tt.want)
			}
			if got.Reason == "" {
				t.Error("empty reason")
			}
			if wantRA := map[bool]time.Duration{true: ra}[tt.want == Retryable]; got.RetryAfter != wantRA {
				t.Errorf("retry after %v, want %v", got.RetryAfter, wantRA)
			}
			// Every 403 refuses the provider token or certificate, and so
			// does TooManyProviderTokenUpdates; nothing else is about the
			// credential.
			if want := tt.give.status == 403 || tt.give.reason == "TooManyProviderTokenUpdates"; got.Credential != want {
				t.Errorf("credential %v, want %v", got.Credential, want)
			}
			// Only a 503 refuses the whole service; Apple documents 429
			// TooManyRequests as about one device token.
			if want := tt.want == Retryable && tt.give.status == 503; got.ProviderWide != want {
				t.Errorf("provider-wide %v, want %v", got.ProviderWide, want)
			}
		})
	}
	if inTable != len(apnsClasses) || len(apnsClasses) != 32 {
		t.Errorf("the test covers %d of the %d reasons in apnsClasses; Apple's table has 32", inTable, len(apnsClasses))
	}
}

// apnsAnswer is an APNs error response.
type apnsAnswer struct {
	status int
	reason string
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		give string
		want time.Duration
	}{
		{"", 0},
		{"5", 5 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{"-3", 0},
		{"99999999999999", maxRetryAfter},
		{"Thu, 26 Nov 2026 10:00:30 GMT", 30 * time.Second},
		{"Thu, 26 Nov 2026 09:59:30 GMT", 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.give, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.give, got, tt.want)
		}
	}
}

// FuzzClassifyFCM feeds arbitrary FCM error answers to the classifier: it
// must not panic, must return a failure class with a reason, and must not
// lose or invent a Retry-After.
func FuzzClassifyFCM(f *testing.F) {
	f.Add(404, fcmErrorJSON(404, "NOT_FOUND", "UNREGISTERED", ""))
	f.Add(400, fcmErrorJSON(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.token"))
	f.Add(503, []byte(`{"error":{"details":[{"@type":1}]}}`))
	f.Add(500, []byte("not json"))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		const ra = 3 * time.Second
		r := classifyFCM(status, body, ra)
		switch r.Class {
		case InvalidToken, Permanent:
			if r.RetryAfter != 0 || r.ProviderWide {
				t.Errorf("%v with retry-after %v, provider-wide %v", r.Class, r.RetryAfter, r.ProviderWide)
			}
		case Retryable:
			if r.RetryAfter != ra {
				t.Errorf("retryable with retry-after %v, want %v", r.RetryAfter, ra)
			}
			if want := status == 429 || status == 503; r.ProviderWide != want {
				t.Errorf("status %d: provider-wide %v, want %v", status, r.ProviderWide, want)
			}
		default:
			t.Errorf("class %v", r.Class)
		}
		if r.Reason == "" {
			t.Error("empty reason")
		}
	})
}

// FuzzParseRetryAfter checks that any header value gives a delay within
// [0, maxRetryAfter].
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"5", "Thu, 26 Nov 2026 10:00:30 GMT", "-1", "9999999999999999999", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if d := parseRetryAfter(v, now); d < 0 || d > maxRetryAfter {
			t.Errorf("parseRetryAfter(%q) = %v", v, d)
		}
	})
}

// TestUnavailableWithoutRetryAfterIsPerDevice: a 503 without Retry-After is
// one call's transient failure, retried for that device; only a 503 that
// says how long to wait (and any FCM 429: the project's quota) pauses the
// whole provider. Pausing every worker on each random 503 stalled a
// broadcast under 30% transient errors for good.
func TestUnavailableWithoutRetryAfterIsPerDevice(t *testing.T) {
	for _, c := range []struct {
		name string
		r    Result
		want bool
	}{
		{"fcm 503", classifyFCM(503, fcmErrorJSON(503, "UNAVAILABLE", "UNAVAILABLE", ""), 0), false},
		{"fcm 503 with Retry-After", classifyFCM(503, fcmErrorJSON(503, "UNAVAILABLE", "UNAVAILABLE", ""), time.Second), true},
		{"fcm 429", classifyFCM(429, fcmErrorJSON(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", ""), 0), true},
		{"apns 503", classifyAPNs(503, "ServiceUnavailable", 0), false},
		{"apns 503 with Retry-After", classifyAPNs(503, "ServiceUnavailable", time.Second), true},
	} {
		if c.r.Class != Retryable || c.r.ProviderWide != c.want {
			t.Errorf("%s: class %v, provider-wide %v; want retryable, provider-wide %v", c.name, c.r.Class, c.r.ProviderWide, c.want)
		}
	}
}
