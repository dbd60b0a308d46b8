package providers

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// FCM error codes (google.firebase.fcm.v1.FcmError errorCode), from FCM's
// ErrorCode reference. APNS_AUTH_ERROR is the older name of
// THIRD_PARTY_AUTH_ERROR that the Admin SDK still recognises.
const (
	fcmUnspecified      = "UNSPECIFIED_ERROR"
	fcmInvalidArgument  = "INVALID_ARGUMENT"
	fcmUnregistered     = "UNREGISTERED"
	fcmSenderIDMismatch = "SENDER_ID_MISMATCH"
	fcmQuotaExceeded    = "QUOTA_EXCEEDED"
	fcmUnavailable      = "UNAVAILABLE"
	fcmInternal         = "INTERNAL"
	fcmThirdPartyAuth   = "THIRD_PARTY_AUTH_ERROR"
	fcmAPNsAuth         = "APNS_AUTH_ERROR"
)

// Types of the google.rpc.Status details FCM sends.
const (
	fcmErrorType   = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
	badRequestType = "type.googleapis.com/google.rpc.BadRequest"
)

// fcmErrorBody is the google.rpc.Status error body of FCM HTTP v1.
type fcmErrorBody struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// classifyFCM classifies an FCM HTTP v1 error response.
//
// The FcmError detail decides when present; otherwise the google.rpc status,
// otherwise the HTTP status. Decisions that are not spelled out by FCM:
//
//   - INVALID_ARGUMENT is what FCM answers both for a malformed message and
//     for a token that is not a valid registration token. Every message is
//     checked before it is sent (see checkFCM), so an INVALID_ARGUMENT
//     carrying the FcmError detail is taken to be about the token and is
//     InvalidToken, unless a google.rpc.BadRequest detail names a field
//     other than message.token: then the message itself is at fault and the
//     result is Permanent, so that a message our checks missed can never
//     remove a whole batch of healthy tokens from the registry.
//   - UNAUTHENTICATED (401 without an FcmError) means our OAuth2 access
//     token was refused: Retryable, and the sender drops the cached token
//     so the next call fetches a new one. PERMISSION_DENIED (403 without an
//     FcmError) and NOT_FOUND (404 without UNREGISTERED) mean the service
//     account or project is wrong: Permanent. 401, 403 and
//     THIRD_PARTY_AUTH_ERROR are Credential refusals.
//   - THIRD_PARTY_AUTH_ERROR is the app's APNs credential in the Firebase
//     project: Permanent (configuration).
//   - UNSPECIFIED_ERROR, unknown FcmError codes, 429 and 5xx: Retryable.
//   - A Retryable 429, and a 503 that carries Retry-After, is
//     ProviderWide: FCM's quota is the project's ("the system serves 429
//     RESOURCE_EXHAUSTED until the quota is refilled"), and a 503
//     UNAVAILABLE with Retry-After is the service asking every caller to
//     wait. A 503 without it is one call's transient failure, retried
//     with backoff for that device alone. FCM's
//     QUOTA_EXCEEDED also covers per-device and per-topic rates, which the
//     answer does not tell apart; pausing for one of those costs a delay,
//     while not pausing for the project's quota spends it on refusals
//     (docs/ARCHITECTURE.md, "Provider pauses"). 500 INTERNAL is not.
func classifyFCM(status int, body []byte, retryAfter time.Duration) Result {
	var eb fcmErrorBody
	_ = json.Unmarshal(body, &eb) // a body that is not JSON leaves only the HTTP status to go on
	var code string
	foreignField := false
	for _, d := range eb.Error.Details {
		switch d.Type {
		case fcmErrorType:
			code = d.ErrorCode
		case badRequestType:
			for _, v := range d.FieldViolations {
				if v.Field != "message.token" {
					foreignField = true
				}
			}
		}
	}
	retry := Result{Class: Retryable, RetryAfter: retryAfter,
		ProviderWide: status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable && retryAfter > 0}
	switch code {
	case fcmUnregistered, fcmSenderIDMismatch:
		return Result{Class: InvalidToken, Reason: code}
	case fcmInvalidArgument:
		if foreignField {
			return Result{Class: Permanent, Reason: code}
		}
		return Result{Class: InvalidToken, Reason: code}
	case fcmThirdPartyAuth, fcmAPNsAuth:
		return Result{Class: Permanent, Reason: code, Credential: true}
	case fcmQuotaExceeded, fcmUnavailable, fcmInternal, fcmUnspecified:
		retry.Reason = code
		return retry
	case "":
		// No FcmError detail: fall through to the google.rpc status.
	default:
		retry.Reason = code
		return retry
	}

	reason := eb.Error.Status
	if reason == "" {
		reason = "HTTP " + strconv.Itoa(status)
	}
	switch {
	case status == http.StatusUnauthorized || reason == "UNAUTHENTICATED":
		retry.Reason, retry.Credential = reason, true
		return retry
	case status == http.StatusForbidden || reason == "PERMISSION_DENIED":
		return Result{Class: Permanent, Reason: reason, Credential: true}
	case status == http.StatusTooManyRequests || status >= 500:
		retry.Reason = reason
		return retry
	case status >= 400:
		return Result{Class: Permanent, Reason: reason}
	}
	// A non-error status cannot reach here from the senders; treat an
	// answer we do not understand as transient.
	retry.Reason = reason
	return retry
}

// APNs reasons, from Apple's "Handling notification responses from APNs".
// github.com/sideshow/apns2 lacks the newer ones.
const (
	apnsBadCollapseID               = "BadCollapseId"
	apnsBadDeviceToken              = "BadDeviceToken"
	apnsBadExpirationDate           = "BadExpirationDate"
	apnsBadMessageID                = "BadMessageId"
	apnsBadPriority                 = "BadPriority"
	apnsBadTopic                    = "BadTopic"
	apnsDeviceTokenNotForTopic      = "DeviceTokenNotForTopic"
	apnsDuplicateHeaders            = "DuplicateHeaders"
	apnsIdleTimeout                 = "IdleTimeout"
	apnsInvalidPushType             = "InvalidPushType"
	apnsMissingDeviceToken          = "MissingDeviceToken"
	apnsMissingTopic                = "MissingTopic"
	apnsPayloadEmpty                = "PayloadEmpty"
	apnsTopicDisallowed             = "TopicDisallowed"
	apnsBadCertificate              = "BadCertificate"
	apnsBadCertificateEnvironment   = "BadCertificateEnvironment"
	apnsExpiredProviderToken        = "ExpiredProviderToken"
	apnsForbidden                   = "Forbidden"
	apnsInvalidProviderToken        = "InvalidProviderToken"
	apnsMissingProviderToken        = "MissingProviderToken"
	apnsUnrelatedKeyIDInToken       = "UnrelatedKeyIdInToken"
	apnsBadEnvironmentKeyIDInToken  = "BadEnvironmentKeyIdInToken"
	apnsBadPath                     = "BadPath"
	apnsMethodNotAllowed            = "MethodNotAllowed"
	apnsExpiredToken                = "ExpiredToken"
	apnsUnregistered                = "Unregistered"
	apnsPayloadTooLarge             = "PayloadTooLarge"
	apnsTooManyProviderTokenUpdates = "TooManyProviderTokenUpdates"
	apnsTooManyRequests             = "TooManyRequests"
	apnsInternalServerError         = "InternalServerError"
	apnsServiceUnavailable          = "ServiceUnavailable"
	apnsShutdown                    = "Shutdown"
)

// apnsClasses maps every reason in Apple's table to its class.
//
// The token reasons (BadDeviceToken, DeviceTokenNotForTopic,
// MissingDeviceToken, ExpiredToken, Unregistered) are InvalidToken: Apple
// says not to retry them, and a token that is wrong for this environment or
// topic is as useless to this deployment as one that is gone. IdleTimeout
// and the 429/500/503 reasons are Retryable. ExpiredProviderToken and
// InvalidProviderToken are Retryable here because the sender regenerates
// the shared provider token when it sees them; the APNs sender turns
// InvalidProviderToken into Permanent when a freshly generated token is
// refused (the key, key id or team id is wrong). Everything else is a
// payload, header or credential error: Permanent.
var apnsClasses = map[string]Class{
	apnsBadCollapseID:               Permanent,
	apnsBadDeviceToken:              InvalidToken,
	apnsBadExpirationDate:           Permanent,
	apnsBadMessageID:                Permanent,
	apnsBadPriority:                 Permanent,
	apnsBadTopic:                    Permanent,
	apnsDeviceTokenNotForTopic:      InvalidToken,
	apnsDuplicateHeaders:            Permanent,
	apnsIdleTimeout:                 Retryable,
	apnsInvalidPushType:             Permanent,
	apnsMissingDeviceToken:          InvalidToken,
	apnsMissingTopic:                Permanent,
	apnsPayloadEmpty:                Permanent,
	apnsTopicDisallowed:             Permanent,
	apnsBadCertificate:              Permanent,
	apnsBadCertificateEnvironment:   Permanent,
	apnsExpiredProviderToken:        Retryable,
	apnsForbidden:                   Permanent,
	apnsInvalidProviderToken:        Retryable,
	apnsMissingProviderToken:        Permanent,
	apnsUnrelatedKeyIDInToken:       Permanent,
	apnsBadEnvironmentKeyIDInToken:  Permanent,
	apnsBadPath:                     Permanent,
	apnsMethodNotAllowed:            Permanent,
	apnsExpiredToken:                InvalidToken,
	apnsUnregistered:                InvalidToken,
	apnsPayloadTooLarge:             Permanent,
	apnsTooManyProviderTokenUpdates: Retryable,
	apnsTooManyRequests:             Retryable,
	apnsInternalServerError:         Retryable,
	apnsServiceUnavailable:          Retryable,
	apnsShutdown:                    Retryable,
}

// apnsCredentialReasons are the reasons that refuse the provider token or
// certificate rather than the device or the notification. Apple answers
// them with 403, except TooManyProviderTokenUpdates (429).
var apnsCredentialReasons = map[string]bool{
	apnsBadCertificate:              true,
	apnsBadCertificateEnvironment:   true,
	apnsExpiredProviderToken:        true,
	apnsForbidden:                   true,
	apnsInvalidProviderToken:        true,
	apnsMissingProviderToken:        true,
	apnsUnrelatedKeyIDInToken:       true,
	apnsBadEnvironmentKeyIDInToken:  true,
	apnsTooManyProviderTokenUpdates: true,
}

// classifyAPNs classifies an APNs error response. A reason that is not in
// Apple's table is classified by its HTTP status: 410 InvalidToken, 429 and
// 5xx Retryable, anything else Permanent.
//
// A Retryable 503 (ServiceUnavailable, Shutdown) that carries Retry-After
// is ProviderWide: Apple documents 503 as "the server is shutting down and
// unavailable", and Retry-After says for how long; without it, it is that
// call's transient failure, retried with backoff. A 429 is
// not: TooManyRequests is "too many requests were made consecutively to
// the same device token", and TooManyProviderTokenUpdates is the sender's
// own token, which the APNs sender handles.
func classifyAPNs(status int, reason string, retryAfter time.Duration) Result {
	class, ok := apnsClasses[reason]
	if !ok {
		switch {
		case status == http.StatusGone:
			class = InvalidToken
		case status == http.StatusTooManyRequests || status >= 500:
			class = Retryable
		default:
			class = Permanent
		}
		if reason == "" {
			reason = "HTTP " + strconv.Itoa(status)
		}
	}
	r := Result{Class: class, Reason: reason,
		Credential: apnsCredentialReasons[reason] || !ok && status == http.StatusForbidden}
	if class == Retryable {
		r.RetryAfter = retryAfter
		r.ProviderWide = status == http.StatusServiceUnavailable && retryAfter > 0
	}
	return r
}

// maxRetryAfter caps a provider's Retry-After, so that a garbled header
// cannot park a device for years (or overflow a Duration).
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// It returns zero when the header is absent, malformed or in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		d = time.Duration(min(max(secs, 0), int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = min(t.Sub(now), maxRetryAfter)
	}
	return max(d, 0)
}
