package appsig

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"time"
)

// Push is a push as the app received it.
type Push struct {
	// Title and Body are the notification's own text (the FCM
	// notification, the APNs aps.alert); empty for a data-only push.
	Title, Body string
	// Data is the push's data: the FCM data, or the APNs payload's
	// top-level keys other than "aps", as strings. Data[DataKey] is the
	// block's JSON.
	Data map[string]string
}

// Device is what the app knows of the phone it runs on.
type Device struct {
	// Token is the phone's push token (for APNs, the lowercase hex of the
	// device token).
	Token string
	// Topics are the topics the app subscribed this phone to.
	Topics []string
}

// Verifier checks pushes against the app-signing keys the app trusts.
type Verifier struct {
	// Keys are the trusted app-signing public keys by key id; several are
	// trusted at once while keys rotate.
	Keys map[string]ed25519.PublicKey
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify checks p on dev, in the order of docs/APP-VERIFICATION.md: the
// block is well formed and of this version, its key id is trusted, the
// signature verifies over the canonical encoding, it has not expired, and
// its audience is this device's. It returns the verified claims: what to
// show (or remove). Whether it was shown before is History's to check.
func (v *Verifier) Verify(dev Device, p Push) (*Claims, error) {
	raw, ok := p.Data[DataKey]
	if !ok {
		return nil, refuse(CodeMalformed, "the push carries no %q block", DataKey)
	}
	var b Block
	if err := json.Unmarshal([]byte(raw), &b); err != nil {
		return nil, refuse(CodeMalformed, "the %q block is not a JSON object: %v", DataKey, err)
	}
	if b.V != Version {
		return nil, refuse(CodeVersion, "block version %d, this verifier knows %d", b.V, Version)
	}
	c, sig, err := claimsOf(&b, p)
	if err != nil {
		return nil, err
	}
	pub, ok := v.Keys[b.KeyID]
	if !ok {
		return nil, refuse(CodeUnknownKey, "key id %q is not trusted", b.KeyID)
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, c.Encode(), sig) {
		return nil, refuse(CodeBadSignature, "the signature does not verify under key %q", b.KeyID)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	if now().Unix() > c.Expires {
		return nil, refuse(CodeExpired, "expired at %d", c.Expires)
	}
	if !dev.addressed(c.Audience) {
		return nil, refuse(CodeWrongAud, "addressed to %q, not to this device", c.Audience)
	}
	return c, nil
}

// claimsOf rebuilds what the block's signature covers from the block and
// the push.
func claimsOf(b *Block, p Push) (*Claims, []byte, error) {
	switch {
	case !b.Kind.valid():
		return nil, nil, refuse(CodeMalformed, "unknown kind %q", b.Kind)
	case b.KeyID == "" || b.Audience == "":
		return nil, nil, refuse(CodeMalformed, "the block has no key id or no audience")
	case b.Kind == KindRecallRemove && (b.Recall == "" || b.Broadcast != ""):
		return nil, nil, refuse(CodeMalformed, "a removal names the removed broadcast under \"recall\" only")
	case b.Kind != KindRecallRemove && (b.Broadcast == "" || b.Recall != ""):
		return nil, nil, refuse(CodeMalformed, "a %s names its broadcast under \"broadcast\" only", b.Kind)
	}
	sig, err := base64.RawURLEncoding.DecodeString(b.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, nil, refuse(CodeMalformed, "the signature is not %d bytes of unpadded base64url", ed25519.SignatureSize)
	}
	c := &Claims{KeyID: b.KeyID, Kind: b.Kind, Broadcast: b.Broadcast + b.Recall, Collapse: b.Collapse,
		Expires: b.Expires, Audience: b.Audience, Title: p.Title, Body: p.Body}
	if b.Title != nil || b.Body != nil {
		if p.Title != "" || p.Body != "" {
			return nil, nil, refuse(CodeMalformed, "the push has text of its own beside the block's")
		}
		c.Title, c.Body = deref(b.Title), deref(b.Body)
	}
	c.Data = maps.Clone(p.Data)
	delete(c.Data, DataKey)
	return c, sig, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// addressed reports whether audience names this device.
func (d Device) addressed(audience string) bool {
	switch {
	case audience == AudienceAll:
		return true
	case len(audience) > len(topicPrefix) && audience[:len(topicPrefix)] == topicPrefix:
		return slices.Contains(d.Topics, audience[len(topicPrefix):])
	case len(audience) == len(tokenPrefix)+tokenHashSize && audience[:len(tokenPrefix)] == tokenPrefix:
		return d.Token != "" && AudienceToken(d.Token) == audience
	}
	return false
}

// History is what the app remembers of the broadcasts it acted on, so
// that none is shown twice: an alert shows only for a broadcast never
// seen; a replacement only for one not yet replaced or removed; a removal
// always acts. The app keeps it as long as the longest broadcast stays
// valid.
type History struct {
	seen map[string]Kind
}

// Admit records c and reports, as a refusal with CodeAlreadyShown, a push
// that must not be shown again.
func (h *History) Admit(c *Claims) error {
	if h.seen == nil {
		h.seen = map[string]Kind{}
	}
	prev, ok := h.seen[c.Broadcast]
	switch {
	case c.Kind == KindAlert && ok:
		return refuse(CodeAlreadyShown, "broadcast %s was already shown (%s)", c.Broadcast, prev)
	case c.Kind == KindRecallReplace && ok && prev != KindAlert:
		return refuse(CodeAlreadyShown, "broadcast %s was already %s", c.Broadcast, prev)
	}
	h.seen[c.Broadcast] = c.Kind
	return nil
}
