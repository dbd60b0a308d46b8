package providers

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/sideshow/apns2"
)

// apnsBatch is a message mapped to APNs once for a whole batch; only the
// device token differs between its notifications.
type apnsBatch struct {
	payload    []byte
	expiration time.Time
	collapseID string
	priority   int
	pushType   apns2.EPushType
	// seal, set for a seal bound to each device's token, signs each
	// device's block. payload then holds a placeholder block of the same
	// length, and a device's payload is head, its block, then "}".
	seal *tokenSeal
	head []byte
}

// notification is the apns2 notification of the batch for one device.
func (b *apnsBatch) notification(topic, token string) *apns2.Notification {
	payload := b.payload
	if b.seal != nil {
		payload = slices.Concat(b.head, b.seal.block(token), []byte("}"))
	}
	return &apns2.Notification{
		DeviceToken: token,
		Topic:       topic,
		Expiration:  b.expiration,
		CollapseID:  b.collapseID,
		Priority:    b.priority,
		PushType:    b.pushType,
		Payload:     payload,
	}
}

// apnsAlert is the aps alert dictionary.
type apnsAlert struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

// apnsAps is the aps dictionary: an alert, or content-available for a
// background push. MutableContent lets the app's Notification Service
// Extension see, and verify, an alert before it is shown.
type apnsAps struct {
	Alert            *apnsAlert `json:"alert,omitempty"`
	ContentAvailable int        `json:"content-available,omitempty"`
	MutableContent   int        `json:"mutable-content,omitempty"`
}

// apnsMessage maps msg to APNs, or returns why APNs would refuse it. now is
// the send time: apns-expiration is absolute, msg.Expires or else now +
// TTL, so a TTL of zero without Expires means one delivery attempt and no
// storage.
//
// The payload is {"aps":{"alert":{"title","body"}},"pushgate":{...}} with
// the message data as further top-level keys; a silent message carries
// {"aps":{"content-available":1}} instead of the alert and is sent with push
// type background and priority 5, as Apple requires. A sealed message
// carries the signed block, without the text (aps.alert has it), as the
// last top-level key; in require mode its alert is mutable-content.
func apnsMessage(msg *Message, now time.Time) (*apnsBatch, string) {
	b, reason := buildAPNs(msg, now)
	if reason != "" {
		return nil, reason
	}
	// A token-bound block has the same length for every device: the
	// batch's payload measures each device's.
	if len(b.payload) > MaxPayload {
		return nil, fmt.Sprintf("payload is %d bytes, over the limit of %d", len(b.payload), MaxPayload)
	}
	return b, ""
}

// buildAPNs is apnsMessage without the size check.
func buildAPNs(msg *Message, now time.Time) (*apnsBatch, string) {
	if reason := checkCommon(msg); reason != "" {
		return nil, reason
	}

	aps := apnsAps{}
	pushType := apns2.PushTypeAlert
	if msg.silent() {
		aps.ContentAvailable = 1
		pushType = apns2.PushTypeBackground
	} else {
		aps.Alert = &apnsAlert{Title: msg.Title, Body: msg.Body}
		if msg.sealRequired() {
			aps.MutableContent = 1
		}
	}
	top := make(map[string]any, len(msg.Data)+2)
	for k, v := range msg.Data {
		top[k] = v
	}
	top["aps"] = aps
	b := &apnsBatch{
		expiration: msg.expiresAt(now),
		collapseID: msg.CollapseID,
		priority:   msg.apnsPriority(),
		pushType:   pushType,
	}
	if msg.Seal == nil {
		top[metaKey] = msg.meta()
	}

	payload, err := json.Marshal(top)
	if err != nil {
		return nil, fmt.Sprintf("encode payload: %v", err)
	}
	if msg.Seal != nil {
		// The object without its closing brace, then the block as its
		// last key.
		block, seal := msg.sealBlock(now, false, true)
		head := slices.Concat(payload[:len(payload)-1], []byte(`,"`+metaKey+`":`))
		payload = slices.Concat(head, block, []byte("}"))
		if seal != nil {
			b.seal, b.head = seal, head
		}
	}
	b.payload = payload
	return b, ""
}
