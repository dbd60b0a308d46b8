// Package providers delivers one message to a batch of devices of one
// platform, through Firebase Cloud Messaging (Android) or the Apple Push
// Notification service (iOS), and classifies every outcome.
//
// The queue sees FCMSender and APNsSender through its own Sender interface,
// and the types in this file. Every Send returns one Result per device, in
// order, only once every call it started has returned. A sender never
// retries and never sleeps on a provider's Retry-After: it
// reports the outcome of each device once, and the queue decides what to do
// next. Every provider call is admitted by a Gate first, so that a
// kill-switch or a provider-wide pause can stop a batch between any two
// calls; a Gate that is an Observer sees each result as it comes.
//
// This package owns no Redis keys.
package providers

import (
	"time"

	"github.com/pushgate/pushgate/api"
)

// Platform names a push provider; it is the wire contract's platform.
type Platform = api.Platform

// The platforms pushgate delivers to.
const (
	FCM  = api.FCM
	APNs = api.APNs
)

// Priority is the delivery priority of a message.
type Priority string

// Message priorities. High wakes the device; normal may be batched by the
// provider to save power.
const (
	PriorityHigh   Priority = "high"
	PriorityNormal Priority = "normal"
)

// MaxPayload is the largest payload, in bytes, that either provider accepts.
const MaxPayload = api.MaxPayload

// MaxCollapseID is the longest collapse identity, in bytes, that APNs
// accepts in apns-collapse-id.
const MaxCollapseID = 64

// Message is what one broadcast sends to every device of a batch.
//
// CollapseID is the collapse identity shared by every copy of a broadcast
// (apns-collapse-id, FCM android.notification.tag and collapse_key), so that
// a re-send or a recall replacement takes the place of the original on the
// phone instead of appearing next to it.
type Message struct {
	// BroadcastID goes into the pushgate metadata block of every push:
	// {"pushgate":{"broadcast":"<id>"}}.
	BroadcastID string
	// RecallOf, when set, makes this a silent recall instruction carrying
	// {"pushgate":{"recall":"<id>"}} instead of the broadcast block.
	RecallOf string

	Title string
	Body  string
	// Data is application data delivered with the notification.
	Data map[string]string

	// TTL is how long the providers keep the message for an offline device.
	// It is sent as android.ttl and as an absolute apns-expiration.
	TTL time.Duration
	// Expires, when set, is the message's absolute expiry and TTL is not
	// sent: apns-expiration is Expires and android.ttl the whole seconds
	// left until it when the batch is sent, so that a re-send keeps the
	// first send's expiry instead of starting a new TTL.
	Expires  time.Time
	Priority Priority

	CollapseID string
	// Silent sends a data-only FCM message and an APNs background push
	// (content-available, apns-push-type: background, priority 5).
	Silent bool

	// Seal, when set, signs every push for the app: the pushgate block is
	// then appsig's signed block instead of the plain metadata block. Nil
	// sends the plain block.
	Seal *Seal
}

// Class is the kind of outcome a device had.
type Class uint8

// Outcome classes. The zero value is not a valid outcome.
const (
	// Sent: the provider accepted the message for the device.
	Sent Class = iota + 1
	// InvalidToken: the token is gone or never belonged to this app; the
	// device must be removed from the registry.
	InvalidToken
	// Retryable: a transient failure; send again after Result.RetryAfter
	// (if given) or a backoff.
	Retryable
	// Permanent: the provider refused the message itself (payload or
	// configuration error); sending again would fail again.
	Permanent
	// Cancelled: the gate or the context stopped the call. When Latency is
	// zero the request certainly did not reach the provider; otherwise it
	// was cancelled in flight and its outcome is unknown.
	Cancelled
)

// String returns the stable name of the class, used in the ledger and in
// metrics.
func (c Class) String() string {
	switch c {
	case Sent:
		return "sent"
	case InvalidToken:
		return "invalid_token"
	case Retryable:
		return "retryable"
	case Permanent:
		return "permanent"
	case Cancelled:
		return "cancelled"
	}
	return "unknown"
}

// Result is the outcome of one device.
type Result struct {
	Class Class
	// MessageID is the provider's id for a sent message (FCM message name,
	// APNs apns-id).
	MessageID string
	// RetryAfter is the delay the provider asked for, zero when it gave none.
	RetryAfter time.Duration
	// ProviderWide marks a Retryable answer that refuses the whole sender
	// account (the FCM project, the APNs service), not this device: every
	// call to the provider should wait RetryAfter, or a default when it is
	// zero (docs/ARCHITECTURE.md, "Provider pauses").
	ProviderWide bool
	// Credential marks a refusal of the deployment's own credential, not
	// of the device or the message: the APNs provider token or
	// certificate, FCM's OAuth2 access token or service account, or the
	// app's APNs credential held by Firebase. Every device fails the same
	// way until an operator acts, so the queue reports the provider
	// degraded (docs/ARCHITECTURE.md, "Provider health").
	Credential bool
	// Reason is the provider's error code (for example UNREGISTERED or
	// BadDeviceToken) or a short description; empty when sent.
	Reason string
	// Latency is how long the provider call took; zero when no call was made.
	Latency time.Duration
}

// Gate admits provider calls. A sender calls Enter before every call and
// makes the call only when it returns true. It calls Commit right before a
// request's body leaves the process — the moment the provider could act on
// the request — once per attempt, and sends the body only when Commit
// returns true; a request whose body is refused is reset unsent. It calls
// Leave(commits) after every admitted call has returned, with the number of
// Commit calls that returned true for it.
//
// A kill-switch implements Gate: once it has closed the gate (Enter and
// Commit refuse) and waited until every committed call has left, no request
// in the killed scope can reach a provider whole, and every request that
// did has been answered. In-flight calls that had not committed can then be
// cancelled freely: they cannot have been delivered.
type Gate interface {
	Enter() bool
	Commit() bool
	Leave(commits int)
}

// Observer is a Gate that is told every call's result as soon as the call
// returns, before the batch's next call asks Enter: the queue closes its
// gate to a provider on the first provider-wide refusal, so the rest of a
// batch in flight stops at once. Results the gate refused are not
// observed.
type Observer interface {
	Gate
	Observe(r Result)
}
