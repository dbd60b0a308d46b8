package appsig

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

// GenerateKey makes an app-signing key: the private key as PKCS #8 PEM,
// for the worker processes, and the public key as unpadded base64url,
// what the app trusts under the key's id.
func GenerateKey() (privatePEM []byte, public string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), EncodePublicKey(pub), nil
}

// EncodePublicKey is pub as the app's list of trusted keys holds it:
// unpadded base64url of the 32 raw bytes.
func EncodePublicKey(pub ed25519.PublicKey) string { return base64.RawURLEncoding.EncodeToString(pub) }

// ParsePrivateKey reads an Ed25519 private key in PKCS #8 PEM, as
// GenerateKey and `openssl genpkey -algorithm ed25519` write it.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM \"PRIVATE KEY\" block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS #8 private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an Ed25519 key", k)
	}
	return priv, nil
}
