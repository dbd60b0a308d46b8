package sim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// credentials is everything the simulator generates at start: its TLS
// authority and server certificate, the FCM service-account key and the
// APNs signing key.
type credentials struct {
	caPEM []byte
	pool  *x509.CertPool
	leaf  tls.Certificate

	saKey    *rsa.PrivateKey
	saKeyID  string
	saKeyPEM []byte

	apnsKey    *ecdsa.PrivateKey
	apnsKeyPEM []byte
}

// newCredentials generates a CA and a leaf for the loopback names and
// cfg.Hostname, and
// takes the service-account and APNs keys from cfg or generates them.
func newCredentials(cfg *Config) (*credentials, error) {
	c := &credentials{}
	if err := c.generateTLS(cfg.Hostname); err != nil {
		return nil, fmt.Errorf("tls certificates: %w", err)
	}

	c.saKey = cfg.ServiceAccountKey
	if c.saKey == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("service-account key: %w", err)
		}
		c.saKey = k
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.saKey)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	c.saKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	// Google's private_key_id is 40 hex digits; derive it from the public
	// key so that a supplied key keeps its id across restarts.
	pub, err := x509.MarshalPKIXPublicKey(&c.saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	sum := sha256.Sum256(pub)
	c.saKeyID = hex.EncodeToString(sum[:20])

	c.apnsKey = cfg.APNsKey
	if c.apnsKey == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("apns key: %w", err)
		}
		c.apnsKey = k
	}
	if c.apnsKey.Curve != elliptic.P256() {
		return nil, fmt.Errorf("apns key: want a P-256 key, got %s", c.apnsKey.Curve.Params().Name)
	}
	der, err = x509.MarshalPKCS8PrivateKey(c.apnsKey)
	if err != nil {
		return nil, fmt.Errorf("apns key: %w", err)
	}
	c.apnsKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return c, nil
}

func (c *credentials) generateTLS(hostname string) error {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"pushgate"}, CommonName: "pushgate simulator CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"pushgate"}, CommonName: "pushgate simulator"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(2 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(hostname); ip != nil {
		leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
	} else if hostname != "" && hostname != "localhost" {
		leafTmpl.DNSNames = append(leafTmpl.DNSNames, hostname)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return err
	}

	c.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	c.pool = x509.NewCertPool()
	c.pool.AddCert(ca)
	c.leaf = tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(err)
	}
	return n
}

// serverTLS returns the TLS configuration of a provider server offering
// the given ALPN protocols.
func (c *credentials) serverTLS(protos ...string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{c.leaf},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   protos,
		// A server that offers only h2 (APNs) refuses clients that do
		// not negotiate it, as Apple does, rather than falling back to
		// HTTP/1.1 when the client offers no ALPN at all.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(protos) == 1 && cs.NegotiatedProtocol != protos[0] {
				return fmt.Errorf("client did not negotiate %s", protos[0])
			}
			return nil
		},
	}
}
