package providers

import (
	"encoding/json"
	"fmt"
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
}

// notification is the apns2 notification of the batch for one device.
func (b *apnsBatch) notification(topic, token string) *apns2.Notification {
	return &apns2.Notification{
		DeviceToken: token,
		Topic:       topic,
		Expiration:  b.expiration,
		CollapseID:  b.collapseID,
		Priority:    b.priority,
		PushType:    b.pushType,
		Payload:     b.payload,
	}
}

// apnsAlert is the aps alert dictionary.
type apnsAlert struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

// apnsAps is the aps dictionary: an alert, or content-available for a
// background push.
type apnsAps struct {
	Alert            *apnsAlert `json:"alert,omitempty"`
	ContentAvailable int        `json:"content-available,omitempty"`
}

// apnsMessage maps msg to APNs, or returns why APNs would refuse it. now is
// the send time: apns-expiration is absolute, msg.Expires or else now +
// TTL, so a TTL of zero without Expires means one delivery attempt and no
// storage.
//
// The payload is {"aps":{"alert":{"title","body"}},"pushgate":{...}} with
// the message data as further top-level keys; a silent message carries
// {"aps":{"content-available":1}} instead of the alert and is sent with push
// type background and priority 5, as Apple requires.
func apnsMessage(msg *Message, now time.Time) (*apnsBatch, string) {
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
	}
	top := make(map[string]any, len(msg.Data)+2)
	for k, v := range msg.Data {
		top[k] = v
	}
	top["aps"] = aps
	top[metaKey] = msg.meta()

	payload, err := json.Marshal(top)
	if err != nil {
		return nil, fmt.Sprintf("encode payload: %v", err)
	}
	if len(payload) > MaxPayload {
		return nil, fmt.Sprintf("payload is %d bytes, over the limit of %d", len(payload), MaxPayload)
	}
	return &apnsBatch{
		payload:    payload,
		expiration: msg.expiresAt(now),
		collapseID: msg.CollapseID,
		priority:   msg.apnsPriority(),
		pushType:   pushType,
	}, ""
}
