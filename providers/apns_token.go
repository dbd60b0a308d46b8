package providers

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"time"

	"github.com/sideshow/apns2/token"
)

// Provider-token ages Apple allows: a token older than an hour is refused
// (ExpiredProviderToken), and changing it more often than every 20 minutes
// is refused too (TooManyProviderTokenUpdates).
const (
	MinAPNsTokenAge     = 20 * time.Minute
	MaxAPNsTokenAge     = 60 * time.Minute
	DefaultAPNsTokenAge = 50 * time.Minute
)

// APNsTokenConfig configures an APNsToken.
type APNsTokenConfig struct {
	// Key is the .p8 signing key (PEM, PKCS #8, ECDSA P-256); KeyFile is
	// read when Key is empty.
	Key     []byte
	KeyFile string
	// KeyID is the key's id (the JWT kid); TeamID is the developer team
	// (the JWT iss).
	KeyID  string
	TeamID string
	// MaxAge is the length of a token epoch, the longest a token is used,
	// within [MinAPNsTokenAge, MaxAPNsTokenAge]; zero means
	// DefaultAPNsTokenAge. Every process must use the same MaxAge to make
	// the same tokens.
	MaxAge time.Duration
	// MinInterval is the shortest time between two tokens, also when APNs
	// refuses the current one; zero means MinAPNsTokenAge. Only tests
	// should shorten it: Apple refuses faster updates.
	MinInterval time.Duration
	Logger      *slog.Logger
	// Now is the clock that ages tokens; nil means time.Now.
	Now func() time.Time
}

// APNsToken is the APNs provider token of a process. Create one and pass it
// to every APNsSender: Apple refuses a team whose token changes more often
// than every 20 minutes (TooManyProviderTokenUpdates), which a token per
// sender or per worker would soon cause.
//
// Every process of a deployment makes the same token: its iat is the start
// of the current MaxAge-long epoch of the Unix clock, and it is signed with
// deterministic ECDSA (RFC 6979), so the same key, key id, team and epoch
// give the same bytes everywhere. Adding worker processes therefore never
// adds token updates, and no process has to share a credential with
// another through Redis.
//
// A token is replaced when its epoch ends: at the first use after the
// boundary, which every process computes from its clock on every use, so
// all of them switch at the same instant whenever each made its previous
// token (a process that kept the old epoch's token would alternate with
// the others' new one, and a late replacement of it would be the update
// Apple refuses). It is also replaced when APNs refuses it
// (ExpiredProviderToken, InvalidProviderToken) and at least MinInterval has
// passed since it was made — then with iat now, since a refused epoch token
// means the clocks disagree; never more often. Such a token is left for
// the epoch token at the next boundary.
type APNsToken struct {
	// tok's embedded mutex guards tok and issued.
	tok    *token.Token
	issued time.Time // the token's iat
	// made is when the token was made; the minimum interval between
	// tokens counts from it, not from iat, which may be earlier.
	made        time.Time
	maxAge      time.Duration
	minInterval time.Duration
	log         *slog.Logger
	now         func() time.Time
}

// NewAPNsToken loads the key and makes the first token.
func NewAPNsToken(cfg APNsTokenConfig) (*APNsToken, error) {
	if cfg.KeyID == "" || cfg.TeamID == "" {
		return nil, errors.New("apns token: key id and team id are required")
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultAPNsTokenAge
	}
	if cfg.MaxAge < MinAPNsTokenAge || cfg.MaxAge > MaxAPNsTokenAge {
		return nil, fmt.Errorf("apns token: max age %s outside [%s, %s]", cfg.MaxAge, MinAPNsTokenAge, MaxAPNsTokenAge)
	}
	if cfg.MinInterval == 0 {
		cfg.MinInterval = MinAPNsTokenAge
	}
	if cfg.MinInterval < 0 || cfg.MinInterval > cfg.MaxAge {
		return nil, fmt.Errorf("apns token: min interval %s outside (0, %s]", cfg.MinInterval, cfg.MaxAge)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	pem := cfg.Key
	if len(pem) == 0 {
		if cfg.KeyFile == "" {
			return nil, errors.New("apns token: no key")
		}
		var err error
		if pem, err = os.ReadFile(cfg.KeyFile); err != nil {
			return nil, fmt.Errorf("apns token: %w", err)
		}
	}
	key, err := token.AuthKeyFromBytes(pem)
	if err != nil {
		return nil, fmt.Errorf("apns token: %w", err)
	}
	t := &APNsToken{
		tok:         &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID},
		maxAge:      cfg.MaxAge,
		minInterval: cfg.MinInterval,
		log:         cfg.Logger.With("platform", string(APNs)),
		now:         cfg.Now,
	}
	t.tok.Lock()
	defer t.tok.Unlock()
	if err := t.generateLocked("first", t.epochStart(t.now())); err != nil {
		return nil, err
	}
	return t, nil
}

// epochStart is the start of the token epoch now falls in.
func (t *APNsToken) epochStart(now time.Time) time.Time {
	return time.Unix(now.Unix()-now.Unix()%int64(t.maxAge/time.Second), 0)
}

// bearer returns the current token, first replacing it if its epoch has
// ended.
func (t *APNsToken) bearer() string {
	t.tok.Lock()
	defer t.tok.Unlock()
	now := t.now()
	if e := t.epochStart(now); t.issued.Before(e) {
		if err := t.generateLocked("age", e); err != nil {
			// Signing with a key that has signed before does not fail in
			// practice. Should it, the old token stays: APNs refuses it
			// once it is too old, and the next call tries again.
			t.log.Error("apns provider token not regenerated", "err", err)
		}
	}
	return t.tok.Bearer
}

// refused is called when APNs refused bearer as expired or invalid. It
// makes a new token unless one was made since bearer, or the current token
// is younger than the minimum interval. fresh reports whether a token other
// than the refused one is now current; when it is not, wait is how long
// until a new one may be made.
func (t *APNsToken) refused(bearer string) (fresh bool, wait time.Duration) {
	t.tok.Lock()
	defer t.tok.Unlock()
	if bearer != t.tok.Bearer {
		return true, 0
	}
	if age := t.now().Sub(t.made); age < t.minInterval {
		return false, t.minInterval - age
	}
	if err := t.generateLocked("refused", t.now()); err != nil {
		t.log.Error("apns provider token not regenerated", "err", err)
		return false, t.minInterval
	}
	return true, 0
}

// generateLocked makes a new token issued at issued. It signs the JWT
// itself instead of calling token.Token.Generate, which takes iat from the
// wall clock and signs with random ECDSA nonces: here iat comes from the
// clock that ages the token, and signatures are deterministic so that
// every process makes the same token for an epoch.
func (t *APNsToken) generateLocked(why string, issued time.Time) error {
	bearer, err := signProviderToken(t.tok.AuthKey, t.tok.KeyID, t.tok.TeamID, issued)
	if err != nil {
		return err
	}
	t.tok.Bearer, t.tok.IssuedAt = bearer, issued.Unix()
	t.issued, t.made = issued, t.now()
	t.log.Info("apns provider token generated", "reason", why, "key_id", t.tok.KeyID, "iat", issued.Unix())
	return nil
}

// signProviderToken returns the ES256 JWT Apple expects, signed per RFC
// 6979 so that equal inputs give equal tokens.
func signProviderToken(key *ecdsa.PrivateKey, keyID, teamID string, issued time.Time) (string, error) {
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}{"ES256", keyID})
	if err != nil {
		return "", fmt.Errorf("apns token: %w", err)
	}
	claims, err := json.Marshal(struct {
		Iss string `json:"iss"`
		Iat int64  `json:"iat"`
	}{teamID, issued.Unix()})
	if err != nil {
		return "", fmt.Errorf("apns token: %w", err)
	}
	b64 := base64.RawURLEncoding
	signing := b64.EncodeToString(header) + "." + b64.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signing))
	der, err := key.Sign(nil, digest[:], crypto.SHA256) // nil rand: RFC 6979
	if err != nil {
		return "", fmt.Errorf("apns token: sign: %w", err)
	}
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return "", fmt.Errorf("apns token: sign: %w", err)
	}
	raw := make([]byte, 64) // JWS ES256 wants r and s, 32 bytes each
	sig.R.FillBytes(raw[:32])
	sig.S.FillBytes(raw[32:])
	return signing + "." + b64.EncodeToString(raw), nil
}
