package api

import (
	"encoding/json"
	"strings"
)

// MaxPayload is the largest push payload, in bytes, that FCM and APNs
// accept. The providers package measures what it builds against it.
const MaxPayload = 4096

// MaxTextBytes bounds a message's text as TextSize measures it, leaving
// the rest of MaxPayload to the providers' envelope: the notification and
// platform fields, the pushgate metadata block and an FCM token (tests in
// providers check that any message within it fits both providers).
const MaxTextBytes = 3072

// dataPairOverhead is what one data pair adds beyond its escaped key and
// value in both providers' JSON: two pairs of quotes, a colon and a comma.
const dataPairOverhead = len(`"":"",`)

// TextSize is the size of a message's text as the providers' JSON carries
// it: title, body, and every data key and value, each escaped as
// encoding/json escapes it (a "<" takes six bytes, a quote two), plus what
// each data pair adds. It is the one measure of text size, at the API and
// in the worker.
func TextSize(title, body string, data map[string]string) int {
	n := escapedLen(title) + escapedLen(body)
	for k, v := range data {
		n += escapedLen(k) + escapedLen(v) + dataPairOverhead
	}
	return n
}

// escapedLen is the length of s as a JSON string's contents.
func escapedLen(s string) int {
	b, err := json.Marshal(s)
	if err != nil {
		// A string always marshals (invalid UTF-8 becomes U+FFFD).
		return len(s) * 6
	}
	return len(b) - 2
}

// MetaKey is the data key of pushgate's metadata block, {"broadcast":
// "<id>"} or {"recall":"<id>"}: an FCM data key and a top-level key of the
// APNs payload, which apps read to act on recalls.
const MetaKey = "pushgate"

// ReservedDataKey returns why k may not be a message data key, or "" when
// it may. It is the one rule, at the API, in the worker and in the
// providers: pushgate's own metadata key; APNs's "aps"; what FCM refuses
// ("from", "message_type", and any key that starts with "google" or "gcm",
// whatever the case) or uses for its own messages ("notification"). A
// message is sent to both platforms, so every rule holds for both.
func ReservedDataKey(k string) string {
	lower := strings.ToLower(k)
	switch {
	case k == "":
		return "a data key may not be empty"
	case lower == MetaKey:
		return "reserved for pushgate's metadata"
	case lower == "aps":
		return "reserved by APNs"
	case lower == "from", lower == "message_type", lower == "notification",
		strings.HasPrefix(lower, "google"), strings.HasPrefix(lower, "gcm"):
		return "reserved by FCM"
	}
	return ""
}
