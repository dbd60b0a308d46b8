package providers

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	"firebase.google.com/go/v4/messaging"
)

// fcmTokenOverhead is what a token adds to the serialised message beyond
// its own bytes: `,"token":""`. FCM registration tokens are ASCII without
// characters JSON escapes, so the token adds exactly its length plus this.
const fcmTokenOverhead = len(`,"token":""`)

// fcmBatch is a message mapped to FCM once for a whole batch: every device
// gets a copy of tmpl with its own token.
type fcmBatch struct {
	tmpl messaging.Message
	// size is the length of tmpl serialised without a token.
	size int
}

// sizeWith is the serialised size of the message addressed to token.
func (b *fcmBatch) sizeWith(token string) int { return b.size + fcmTokenOverhead + len(token) }

// refuseToken returns why the message cannot go to token, or "" when it
// can: FCM measures the whole message, token included, against MaxPayload.
func (b *fcmBatch) refuseToken(token string) string {
	if n := b.sizeWith(token); n > MaxPayload {
		return fmt.Sprintf("message is %d bytes, over the limit of %d", n, MaxPayload)
	}
	return ""
}

// fcmMessage maps msg to an FCM message without a token, or returns why FCM
// would refuse it. now is the send time, for the absolute apns-expiration
// of iOS devices reached through FCM.
//
// Data values are strings in FCM, so the pushgate block travels as a JSON
// string under data["pushgate"]. A silent message is data-only: no
// notification, no android.notification, and for iOS content-available with
// push type background.
func fcmMessage(msg *Message, now time.Time) (*fcmBatch, string) {
	if reason := checkCommon(msg); reason != "" {
		return nil, reason
	}
	ttl := msg.ttlAt(now)
	if ttl > maxFCMTTL {
		return nil, fmt.Sprintf("ttl %s is over FCM's limit of %s", ttl, maxFCMTTL)
	}
	data := make(map[string]string, len(msg.Data)+1)
	maps.Copy(data, msg.Data)
	data[metaKey] = msg.metaJSON()

	android := &messaging.AndroidConfig{
		CollapseKey: msg.CollapseID,
		Priority:    "normal",
		TTL:         &ttl,
	}
	if msg.highPriority() {
		android.Priority = "high"
	}

	pushType := "alert"
	if msg.silent() {
		pushType = "background"
	}
	apnsHeaders := map[string]string{
		"apns-expiration": strconv.FormatInt(msg.expiresAt(now).Unix(), 10),
		"apns-priority":   strconv.Itoa(msg.apnsPriority()),
		"apns-push-type":  pushType,
	}
	if msg.CollapseID != "" {
		apnsHeaders["apns-collapse-id"] = msg.CollapseID
	}
	apns := &messaging.APNSConfig{Headers: apnsHeaders}

	b := &fcmBatch{tmpl: messaging.Message{Data: data, Android: android, APNS: apns}}
	if msg.silent() {
		apns.Payload = &messaging.APNSPayload{Aps: &messaging.Aps{ContentAvailable: true}}
	} else {
		b.tmpl.Notification = &messaging.Notification{Title: msg.Title, Body: msg.Body}
		android.Notification = &messaging.AndroidNotification{Tag: msg.CollapseID}
	}

	enc, err := json.Marshal(&b.tmpl)
	if err != nil {
		return nil, fmt.Sprintf("encode message: %v", err)
	}
	b.size = len(enc)
	// Even the shortest token cannot make an oversized message fit: refuse
	// the batch here rather than once per device.
	if reason := b.refuseToken(""); reason != "" {
		return nil, reason
	}
	return b, ""
}
