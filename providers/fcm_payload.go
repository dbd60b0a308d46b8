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
	// seal, set for a seal bound to each device's token, signs each
	// device's block; tmpl then holds a placeholder block of the same
	// length.
	seal *tokenSeal
}

// message is the message of the batch addressed to token. For a
// token-bound seal it has a data map of its own, with the device's block.
func (b *fcmBatch) message(token string) messaging.Message {
	m := b.tmpl
	m.Token = token
	if b.seal != nil {
		m.Data = maps.Clone(b.tmpl.Data)
		m.Data[metaKey] = string(b.seal.block(token))
	}
	return m
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
// push type background. So is every message sealed in require mode: its
// block carries the text, which the app shows once it verifies.
func fcmMessage(msg *Message, now time.Time) (*fcmBatch, string) {
	b, reason := buildFCM(msg, now)
	if reason != "" {
		return nil, reason
	}
	// Even the shortest token cannot make an oversized message fit: refuse
	// the batch here rather than once per device.
	if reason := b.refuseToken(""); reason != "" {
		return nil, reason
	}
	return b, ""
}

// buildFCM is fcmMessage without the size check.
func buildFCM(msg *Message, now time.Time) (*fcmBatch, string) {
	if reason := checkCommon(msg); reason != "" {
		return nil, reason
	}
	ttl := msg.ttlAt(now)
	if ttl > maxFCMTTL {
		return nil, fmt.Sprintf("ttl %s is over FCM's limit of %s", ttl, maxFCMTTL)
	}
	dataOnly := msg.silent() || msg.sealRequired()
	b := &fcmBatch{}
	data := make(map[string]string, len(msg.Data)+1)
	maps.Copy(data, msg.Data)
	if msg.Seal == nil {
		data[metaKey] = msg.metaJSON()
	} else {
		// A message that is data-only because of the seal has no
		// notification of its own: its block carries the text.
		var block []byte
		block, b.seal = msg.sealBlock(now, msg.sealRequired() && !msg.silent(), false)
		data[metaKey] = string(block)
	}

	android := &messaging.AndroidConfig{
		CollapseKey: msg.CollapseID,
		Priority:    "normal",
		TTL:         &ttl,
	}
	if msg.highPriority() {
		android.Priority = "high"
	}

	pushType, priority := "alert", msg.apnsPriority()
	if dataOnly {
		// APNs takes a background push at priority 5 only.
		pushType, priority = "background", 5
	}
	apnsHeaders := map[string]string{
		"apns-expiration": strconv.FormatInt(msg.expiresAt(now).Unix(), 10),
		"apns-priority":   strconv.Itoa(priority),
		"apns-push-type":  pushType,
	}
	if msg.CollapseID != "" {
		apnsHeaders["apns-collapse-id"] = msg.CollapseID
	}
	apns := &messaging.APNSConfig{Headers: apnsHeaders}

	b.tmpl = messaging.Message{Data: data, Android: android, APNS: apns}
	if dataOnly {
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
	return b, ""
}
