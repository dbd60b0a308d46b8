package queue

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing/appsig"
)

// AppSigning signs every push made from a verified envelope for the app,
// so that an app can refuse what pushgate did not sign: pushes sent with
// the deployment's FCM or APNs credential around pushgate, and signed
// broadcasts re-sent or re-targeted through Redis (docs/ARCHITECTURE.md,
// "End-to-end signed notifications"; docs/APP-VERIFICATION.md).
type AppSigning struct {
	// Mode is providers.SealSign or providers.SealRequire; "" sends pushes
	// unsigned.
	Mode providers.SealMode
	// Signer is the app-signing key. Workers need it; the API only the
	// mode and the key id, to refuse what would not fit once signed.
	Signer *appsig.Signer
	// KeyID is the app-signing key's id; it is the Signer's when that is
	// set.
	KeyID string

	// measure signs with a throwaway key under KeyID, for sizes only.
	measure *appsig.Signer
}

// on reports whether pushes are signed.
func (a AppSigning) on() bool { return a.Mode != "" }

// prepared validates a for a process that signs (workers) or only
// measures (the API), and readies its measuring signer.
func (a AppSigning) prepared(signs bool) (AppSigning, error) {
	switch a.Mode {
	case "":
		return a, nil
	case providers.SealSign, providers.SealRequire:
	default:
		return a, fmt.Errorf("queue: app signing mode %q: want sign or require", a.Mode)
	}
	if signs && a.Signer == nil {
		return a, fmt.Errorf("queue: app signing mode %s needs the app-signing key", a.Mode)
	}
	if a.Signer != nil {
		a.KeyID = a.Signer.KeyID()
	}
	// Sizes do not depend on the key: a throwaway one of the same id
	// measures what the workers will build.
	m, err := appsig.NewSigner(a.KeyID, ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	if err != nil {
		return a, fmt.Errorf("queue: app signing: %w", err)
	}
	a.measure = m
	return a, nil
}

// seal is the seal of pushes of kind to the audience of the broadcast
// vb, or nil when pushes go unsigned. The audience binding comes from the
// verified envelope, never from Redis: a broadcast re-targeted there is
// still bound to the audience its sender signed.
func (a AppSigning) seal(kind appsig.Kind, aud api.Audience) *providers.Seal {
	if !a.on() {
		return nil
	}
	return &providers.Seal{Signer: a.Signer, Mode: a.Mode, Kind: kind, Audience: sealAudience(aud)}
}

// sealAudience is the app-signing binding of an audience: the topic, all,
// or "" for a tokens audience (each device's own token).
func sealAudience(aud api.Audience) string {
	switch {
	case aud.Topic != "":
		return appsig.AudienceTopic(aud.Topic)
	case aud.All:
		return appsig.AudienceAll
	}
	return ""
}

// checkSealedSize refuses a message that would not fit the providers'
// limit once signed.
func (a AppSigning) checkSealedSize(msg providers.Message, kind appsig.Kind, aud api.Audience, now time.Time) error {
	if !a.on() {
		return nil
	}
	msg.Seal = &providers.Seal{Signer: a.measure, Mode: a.Mode, Kind: kind, Audience: sealAudience(aud)}
	if _, reason := providers.SealedSize(&msg, now); reason != "" {
		return api.Errorf(api.CodeInvalidMessage, "%s (app signing is %s)", reason, a.Mode)
	}
	return nil
}
