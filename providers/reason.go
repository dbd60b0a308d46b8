package providers

import (
	"strconv"
	"strings"
)

// Reason codes that are not a provider's own: the call did not reach the
// provider or its answer was not an error code.
const (
	CodeTransport         = "transport"          // the connection failed or timed out
	CodeOAuth2Refused     = "oauth2_refused"     // Google's token endpoint refused the service account
	CodeOAuth2Unavailable = "oauth2_unavailable" // no access token could be fetched
	CodeSDK               = "sdk"                // the SDK refused the message before sending it
	CodeMessage           = "message_refused"    // the message breaks a provider's rule; refused unsent
	CodeEmptyToken        = "empty_token"        // the device token is empty
	CodeCancelled         = "cancelled"          // no answer: the call was cut short or never made
	CodeOther             = "other"              // a reason outside every known set
)

// rpcStatuses are the google.rpc.Code names FCM may answer with.
var rpcStatuses = map[string]bool{
	"CANCELLED": true, "UNKNOWN": true, "INVALID_ARGUMENT": true, "DEADLINE_EXCEEDED": true,
	"NOT_FOUND": true, "ALREADY_EXISTS": true, "PERMISSION_DENIED": true, "RESOURCE_EXHAUSTED": true,
	"FAILED_PRECONDITION": true, "ABORTED": true, "OUT_OF_RANGE": true, "UNIMPLEMENTED": true,
	"INTERNAL": true, "UNAVAILABLE": true, "DATA_LOSS": true, "UNAUTHENTICATED": true,
}

// fcmCodes are the FcmError codes FCM documents.
var fcmCodes = map[string]bool{
	fcmUnspecified: true, fcmInvalidArgument: true, fcmUnregistered: true, fcmSenderIDMismatch: true,
	fcmQuotaExceeded: true, fcmUnavailable: true, fcmInternal: true, fcmThirdPartyAuth: true, fcmAPNsAuth: true,
}

// Code returns the result's reason reduced to a bounded set, fit for a
// metric label or a counter's name: a reason of Apple's table, an FcmError
// code, a google.rpc status, "HTTP <status>", or one of the Code
// constants. Reason itself may hold whatever a provider answered; Code
// never grows with it. A sent result has the code "".
func (r Result) Code() string {
	if r.Class == Sent {
		return ""
	}
	if r.Class == Cancelled {
		return CodeCancelled
	}
	reason := r.Reason
	if _, ok := apnsClasses[reason]; ok || fcmCodes[reason] || rpcStatuses[reason] {
		return reason
	}
	if s, ok := strings.CutPrefix(reason, "HTTP "); ok {
		if n, err := strconv.Atoi(s); err == nil && n >= 100 && n <= 599 {
			return "HTTP " + strconv.Itoa(n)
		}
	}
	switch {
	case strings.HasPrefix(reason, "transport: "):
		return CodeTransport
	case strings.HasPrefix(reason, "oauth2 token refused: "):
		return CodeOAuth2Refused
	case strings.HasPrefix(reason, "oauth2 token: "):
		return CodeOAuth2Unavailable
	case strings.HasPrefix(reason, "fcm sdk: "):
		return CodeSDK
	case strings.HasPrefix(reason, messageRefused):
		return CodeMessage
	case reason == emptyToken:
		return CodeEmptyToken
	}
	return CodeOther
}
