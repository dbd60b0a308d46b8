package providers

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pushgate/pushgate/api"
)

// maxFCMTTL is the longest android.ttl FCM accepts (4 weeks); FCM answers
// INVALID_ARGUMENT above it.
const maxFCMTTL = 28 * 24 * time.Hour

// metaKey is the key of the pushgate metadata block: a top-level key of the
// APNs payload and an FCM data key. Applications read it to tell pushgate's
// pushes apart and to act on recalls, so message data may not use it.
const metaKey = api.MetaKey

// silent reports whether msg is delivered without a visible notification.
// A recall instruction is always silent: the app acts on it, the user does
// not see it.
func (msg *Message) silent() bool { return msg.Silent || msg.RecallOf != "" }

// highPriority reports whether msg should reach the device at once. An
// empty priority means high: pushgate's broadcasts are alerts, and a recall
// must reach the phone quickly.
func (msg *Message) highPriority() bool { return msg.Priority != PriorityNormal }

// apnsPriority is the apns-priority of msg: 10 only for a high-priority
// visible notification, because APNs refuses priority 10 for a background
// push (content-available only).
func (msg *Message) apnsPriority() int {
	if msg.highPriority() && !msg.silent() {
		return 10
	}
	return 5
}

// ttlAt is how long the providers should keep msg, sent at now, for an
// offline device: the whole seconds left until Expires (none once it has
// passed), or TTL when Expires is not set.
func (msg *Message) ttlAt(now time.Time) time.Duration {
	if msg.Expires.IsZero() {
		return msg.TTL
	}
	return max(msg.Expires.Sub(now).Truncate(time.Second), 0)
}

// expiresAt is msg's absolute expiry when it is sent at now.
func (msg *Message) expiresAt(now time.Time) time.Time {
	if msg.Expires.IsZero() {
		return now.Add(msg.TTL)
	}
	return msg.Expires
}

// meta returns the pushgate metadata block of msg.
func (msg *Message) meta() metaBlock {
	if msg.RecallOf != "" {
		return metaBlock{Recall: msg.RecallOf}
	}
	return metaBlock{Broadcast: msg.BroadcastID}
}

// metaBlock is {"broadcast":"<id>"} or {"recall":"<id>"}.
type metaBlock struct {
	Broadcast string `json:"broadcast,omitempty"`
	Recall    string `json:"recall,omitempty"`
}

// metaJSON is the metadata block as a JSON string, the form FCM data values
// need.
func (msg *Message) metaJSON() string {
	b, err := json.Marshal(msg.meta())
	if err != nil {
		// A struct of two strings always marshals.
		panic(fmt.Sprintf("providers: marshal metadata: %v", err))
	}
	return string(b)
}

// checkCommon returns why msg cannot be sent to any provider, or "" when it
// can. Each check mirrors a refusal of the providers, so that a message they
// would refuse is reported once per batch instead of being sent once per
// device and refused every time.
func checkCommon(msg *Message) string {
	switch {
	case msg.BroadcastID == "" && msg.RecallOf == "":
		return "message has neither a broadcast id nor a recalled broadcast id"
	case len(msg.CollapseID) > MaxCollapseID:
		return fmt.Sprintf("collapse id is %d bytes, over the limit of %d", len(msg.CollapseID), MaxCollapseID)
	case msg.TTL < 0:
		return "ttl is negative"
	case msg.Priority != "" && msg.Priority != PriorityHigh && msg.Priority != PriorityNormal:
		return fmt.Sprintf("unknown priority %q", msg.Priority)
	}
	// The API refuses these keys already (api.ReservedDataKey, the one
	// rule); a message is sent to both platforms, so both refuse them.
	for k := range msg.Data {
		if why := api.ReservedDataKey(k); why != "" {
			return fmt.Sprintf("data key %q is %s", k, why)
		}
	}
	if msg.Seal != nil {
		return checkSeal(msg)
	}
	return ""
}

// emptyToken is the reason of a device whose token is empty.
const emptyToken = "empty device token"

// tokenProblem returns why a device token can never be delivered to, or ""
// when it may be tried. Only the empty token is caught here: any other
// shape is the provider's to judge.
func tokenProblem(token string) string {
	if token == "" {
		return emptyToken
	}
	return ""
}
