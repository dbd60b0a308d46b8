package appsig

import (
	"crypto/ed25519"
	"encoding/base64"
)

// EncodePublicKey is pub as the app's list of trusted keys holds it:
// unpadded base64url of the 32 raw bytes. The private key is an ordinary
// Ed25519 key in PKCS #8 PEM (signing.GenerateKey, MarshalPrivateKeyPEM
// and ParsePrivateKeyPEM read and write it).
func EncodePublicKey(pub ed25519.PublicKey) string { return base64.RawURLEncoding.EncodeToString(pub) }
