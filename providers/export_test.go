package providers

import (
	"time"

	"firebase.google.com/go/v4/messaging"
	"github.com/sideshow/apns2"
)

// What the benchmark's bare loop needs: the senders' own SDK clients and
// the messages they would send.

func (s *FCMSender) SDKClient() *messaging.Client { return s.client }

func (s *APNsSender) SDKClient() *apns2.Client { return s.client }

// FCMTemplate is the FCM message the sender sends for msg, without a token.
func FCMTemplate(msg *Message, now time.Time) messaging.Message {
	b, reason := fcmMessage(msg, now)
	if reason != "" {
		panic(reason)
	}
	return b.tmpl
}

// FCMMessage is the FCM message the sender sends for msg to token.
func FCMMessage(msg *Message, now time.Time, token string) messaging.Message {
	b, reason := fcmMessage(msg, now)
	if reason != "" {
		panic(reason)
	}
	return b.message(token)
}

// APNsNotification is the notification the sender sends for msg to token.
func APNsNotification(msg *Message, now time.Time, topic, token string) *apns2.Notification {
	b, reason := apnsMessage(msg, now)
	if reason != "" {
		panic(reason)
	}
	return b.notification(topic, token)
}

// ProviderBearer exposes the current bearer token for tests.
func ProviderBearer(t *APNsToken) string { return t.bearer() }
