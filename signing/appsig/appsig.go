// Package appsig is pushgate's end-to-end notification signature: the
// signed block the workers add to every push, its canonical byte encoding,
// and the checks an app makes before it shows a push.
//
// Whoever holds the deployment's FCM or APNs credential can send any push
// to the app, and whoever can write to Redis can re-send or re-target a
// signed broadcast; neither holds the app-signing key. An app that trusts
// only pushgate's app-signing keys shows what pushgate signed, addressed
// to this device, once. docs/APP-VERIFICATION.md writes the encoding down
// byte by byte; the reference verifiers in other languages pass the same
// vectors (testdata/vectors.json).
package appsig

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Version is the block format this package signs and verifies.
const Version = 1

// domain starts the signed bytes, so that no other message signed with an
// app-signing key can pass for a notification.
const domain = "pushgate-notification/1"

// DataKey is the push data key (an FCM data key, a top-level key of the
// APNs payload) that carries the block.
const DataKey = "pushgate"

// Kind is what a push does on the phone.
type Kind string

// The kinds of push.
const (
	// KindAlert shows a broadcast.
	KindAlert Kind = "alert"
	// KindRecallReplace replaces a shown broadcast with new text, under
	// the same broadcast id and collapse id.
	KindRecallReplace Kind = "recall-replace"
	// KindRecallRemove removes a shown broadcast; it shows nothing.
	KindRecallRemove Kind = "recall-remove"
)

func (k Kind) valid() bool {
	return k == KindAlert || k == KindRecallReplace || k == KindRecallRemove
}

// Audience bindings: "all", "topic:<name>", or "token:<hex>" where hex is
// the lowercase hex SHA-256 of the device token's bytes.
const (
	AudienceAll   = "all"
	topicPrefix   = "topic:"
	tokenPrefix   = "token:"
	tokenHashSize = 2 * sha256.Size
)

// AudienceTopic is the binding of a topic broadcast.
func AudienceTopic(topic string) string { return topicPrefix + topic }

// AudienceToken is the binding of a push to one device token.
func AudienceToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return tokenPrefix + hex.EncodeToString(sum[:])
}

// Claims is what a signature covers: everything the phone acts on.
type Claims struct {
	KeyID string
	Kind  Kind
	// Broadcast is the broadcast shown (an alert), replaced or removed.
	Broadcast string
	Collapse  string
	// Expires is when the push stops being valid, in Unix seconds.
	Expires  int64
	Audience string
	Title    string
	Body     string
	// Data is the push's application data, without DataKey.
	Data map[string]string
}

// Encode returns the canonical bytes of c: the domain string, then each
// field as a 4-byte big-endian length and its UTF-8 bytes, in the order
// key id, kind, broadcast, collapse, expires (decimal), audience, title,
// body; then the number of data pairs (4 bytes, big-endian) and each pair,
// key then value, in the bytewise order of the keys.
func (c *Claims) Encode() []byte {
	n := len(domain) + 8*4 + len(c.KeyID) + len(c.Kind) + len(c.Broadcast) + len(c.Collapse) + 20 +
		len(c.Audience) + len(c.Title) + len(c.Body) + 4
	keys := make([]string, 0, len(c.Data))
	for k, v := range c.Data {
		keys = append(keys, k)
		n += 8 + len(k) + len(v)
	}
	slices.Sort(keys)
	b := make([]byte, 0, n)
	b = append(b, domain...)
	for _, f := range []string{c.KeyID, string(c.Kind), c.Broadcast, c.Collapse,
		strconv.FormatInt(c.Expires, 10), c.Audience, c.Title, c.Body} {
		b = appendField(b, f)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = appendField(b, k)
		b = appendField(b, c.Data[k])
	}
	return b
}

func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// Block is the signed block as it travels under DataKey: a JSON object.
// Broadcast names the broadcast of an alert or a replacement, Recall the
// broadcast a removal removes (the fields pushgate's metadata block always
// had). Title and Body are set only when the push carries no notification
// of its own (FCM messages in require mode are data-only): the app then
// shows them after verifying.
type Block struct {
	V         int     `json:"v"`
	KeyID     string  `json:"kid"`
	Kind      Kind    `json:"kind"`
	Broadcast string  `json:"broadcast,omitempty"`
	Recall    string  `json:"recall,omitempty"`
	Collapse  string  `json:"collapse,omitempty"`
	Expires   int64   `json:"exp"`
	Audience  string  `json:"aud"`
	Title     *string `json:"title,omitempty"`
	Body      *string `json:"body,omitempty"`
	Sig       string  `json:"sig"`
}

// SigLen is the length of Block.Sig: an Ed25519 signature in unpadded
// base64url.
const SigLen = 86

// Signer signs blocks with one app-signing key.
type Signer struct {
	keyID string
	key   ed25519.PrivateKey
}

// NewSigner returns a signer for key under keyID.
func NewSigner(keyID string, key ed25519.PrivateKey) (*Signer, error) {
	if keyID == "" || strings.ContainsAny(keyID, " \t\r\n") {
		return nil, fmt.Errorf("appsig: key id %q must be non-empty and without spaces", keyID)
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("appsig: private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	return &Signer{keyID: keyID, key: key}, nil
}

// KeyID is the signer's key id.
func (s *Signer) KeyID() string { return s.keyID }

// Public is the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign signs c under the signer's key id and returns its block. When
// carryText is set the block carries the title and body itself.
func (s *Signer) Sign(c Claims, carryText bool) Block {
	c.KeyID = s.keyID
	sig := ed25519.Sign(s.key, c.Encode())
	b := Block{V: Version, KeyID: c.KeyID, Kind: c.Kind, Collapse: c.Collapse, Expires: c.Expires,
		Audience: c.Audience, Sig: base64.RawURLEncoding.EncodeToString(sig)}
	if c.Kind == KindRecallRemove {
		b.Recall = c.Broadcast
	} else {
		b.Broadcast = c.Broadcast
	}
	if carryText {
		b.Title, b.Body = &c.Title, &c.Body
	}
	return b
}

// Error is a push the app must not act on, with a stable code.
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string { return e.Code + ": " + e.Msg }

// Refusal codes, in the order of the checks.
const (
	CodeMalformed    = "malformed"
	CodeVersion      = "unsupported_version"
	CodeUnknownKey   = "unknown_key"
	CodeBadSignature = "bad_signature"
	CodeExpired      = "expired"
	CodeWrongAud     = "wrong_audience"
	CodeAlreadyShown = "already_shown"
)

func refuse(code, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the refusal code of err, or "" when err is not one.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
