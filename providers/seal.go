package providers

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/pushgate/pushgate/signing/appsig"
)

// SealMode is how pushes are signed for the app.
type SealMode string

// The seal modes.
const (
	// SealSign adds the signed block; the OS still displays the
	// notification itself.
	SealSign SealMode = "sign"
	// SealRequire makes a visible FCM message data-only, its text in the
	// block, so that the app builds the notification after verifying it;
	// a visible APNs alert carries mutable-content: 1, so that the app's
	// Notification Service Extension verifies it before it is shown.
	SealRequire SealMode = "require"
)

// Seal signs a message's pushes for the app: with a seal, the pushgate
// block of every push is the signed block of appsig instead of the plain
// metadata block.
type Seal struct {
	Signer *appsig.Signer
	Mode   SealMode
	// Kind is what the push does on the phone: a recall instruction
	// (Message.RecallOf) is appsig.KindRecallRemove, anything else an
	// alert or a replacement.
	Kind appsig.Kind
	// Audience is the binding of the whole batch: appsig.AudienceAll or
	// appsig.AudienceTopic. Empty means each device's own,
	// appsig.AudienceToken of its token, signed once per device; any other
	// audience is signed once per batch.
	Audience string
}

// checkSeal returns why msg's seal cannot sign it, or "" when it can.
func checkSeal(msg *Message) string {
	s := msg.Seal
	switch {
	case s.Signer == nil:
		return "seal has no signer"
	case s.Mode != SealSign && s.Mode != SealRequire:
		return fmt.Sprintf("unknown seal mode %q", s.Mode)
	case s.Kind != appsig.KindAlert && s.Kind != appsig.KindRecallReplace && s.Kind != appsig.KindRecallRemove:
		return fmt.Sprintf("unknown seal kind %q", s.Kind)
	case msg.RecallOf != "" && s.Kind != appsig.KindRecallRemove:
		return fmt.Sprintf("a recall instruction is sealed as %s, not %s", appsig.KindRecallRemove, s.Kind)
	case msg.RecallOf == "" && s.Kind == appsig.KindRecallRemove:
		return fmt.Sprintf("a %s seal is for a recall instruction only", appsig.KindRecallRemove)
	case s.Audience != "" && s.Audience != appsig.AudienceAll && !isTopicAudience(s.Audience):
		return fmt.Sprintf("seal audience %q is neither %q nor a topic", s.Audience, appsig.AudienceAll)
	}
	return ""
}

// isTopicAudience reports whether a is appsig.AudienceTopic of some topic.
func isTopicAudience(a string) bool {
	topic, ok := strings.CutPrefix(a, appsig.AudienceTopic(""))
	return ok && topic != ""
}

// sealRequired reports whether msg is sealed in require mode.
func (msg *Message) sealRequired() bool { return msg.Seal != nil && msg.Seal.Mode == SealRequire }

// claims are what msg's seal signs when msg is sent at now, but for a
// token-bound seal's audience. The text is what the push shows: none for
// a silent push or a recall instruction.
func (msg *Message) claims(now time.Time) appsig.Claims {
	c := appsig.Claims{
		Kind:      msg.Seal.Kind,
		Broadcast: msg.BroadcastID,
		Collapse:  msg.CollapseID,
		Expires:   msg.expiresAt(now).Unix(),
		Audience:  msg.Seal.Audience,
		Data:      msg.Data,
	}
	if msg.RecallOf != "" {
		c.Broadcast = msg.RecallOf
	}
	if !msg.silent() {
		c.Title, c.Body = msg.Title, msg.Body
	}
	return c
}

// sealBlock signs msg's block for one platform's batch: the block JSON to
// send and, for a token-bound seal, the signer of each device's block
// (nil otherwise). A token-bound block is then a placeholder bound to no
// device, of the length every device's block has: the token's hash and
// the signature have fixed lengths, and neither needs escaping in JSON,
// so the batch measures its devices' pushes exactly. carryText puts the
// text in the block; lowerToken binds the lowercase of each token (APNs
// tokens are hex, and the app binds the lowercase hex).
func (msg *Message) sealBlock(now time.Time, carryText, lowerToken bool) ([]byte, *tokenSeal) {
	c := msg.claims(now)
	if c.Audience != "" {
		return marshalBlock(msg.Seal.Signer.Sign(c, carryText)), nil
	}
	ts := &tokenSeal{signer: msg.Seal.Signer, claims: c, carryText: carryText, lowerToken: lowerToken}
	return ts.block(""), ts
}

// tokenSeal signs one block per device, bound to the device's token.
type tokenSeal struct {
	signer *appsig.Signer
	// claims are shared by every device but for the audience.
	claims     appsig.Claims
	carryText  bool
	lowerToken bool
}

// block is the JSON of the block bound to token.
func (s *tokenSeal) block(token string) []byte {
	if s.lowerToken {
		token = strings.ToLower(token)
	}
	c := s.claims
	c.Audience = appsig.AudienceToken(token)
	return marshalBlock(s.signer.Sign(c, s.carryText))
}

func marshalBlock(b appsig.Block) []byte {
	enc, err := json.Marshal(b)
	if err != nil {
		// A struct of strings and integers always marshals.
		panic(fmt.Sprintf("providers: marshal signed block: %v", err))
	}
	return enc
}

// maxFCMToken is the longest FCM registration token pushgate expects, for
// size checks made before the tokens are known (SealedSize): longer than
// any seen, which are about 160 bytes. FCM counts the token against
// MaxPayload, APNs does not.
const maxFCMToken = 256

// SealedSize is the largest push msg would make, sent at now, on either
// platform, as each provider measures it against MaxPayload: the FCM
// message addressed to a token of the longest length expected, and the
// APNs payload. With msg.Seal set it is the signed push; only the
// signer's key id matters to the size, so a signer of any key under the
// deployment's key id will do. reason is why the message cannot be sent,
// "" when it can: over the limit, "signed payload is N bytes, over the
// limit of 4096" (or "payload is …" unsigned), or any other refusal of
// the providers, with a size of 0.
func SealedSize(msg *Message, now time.Time) (size int, reason string) {
	f, reason := buildFCM(msg, now)
	if reason != "" {
		return 0, reason
	}
	a, reason := buildAPNs(msg, now)
	if reason != "" {
		return 0, reason
	}
	size = max(f.size+fcmTokenOverhead+maxFCMToken, len(a.payload))
	if size > MaxPayload {
		what := "payload"
		if msg.Seal != nil {
			what = "signed payload"
		}
		return size, fmt.Sprintf("%s is %d bytes, over the limit of %d", what, size, MaxPayload)
	}
	return size, ""
}
