package providers

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v4"
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
	// MaxAge is how long a token is used before a new one is made, within
	// [MinAPNsTokenAge, MaxAPNsTokenAge]; zero means DefaultAPNsTokenAge.
	MaxAge time.Duration
	// MinInterval is the shortest time between two tokens, also when APNs
	// refuses the current one; zero means MinAPNsTokenAge. Only tests
	// should shorten it: Apple refuses faster updates.
	MinInterval time.Duration
	Logger      *slog.Logger
	// Now is the clock that ages tokens; nil means time.Now.
	Now func() time.Time
}

// APNsToken is the one APNs provider token of a process. Create one and
// pass it to every APNsSender: Apple refuses a team whose token changes more
// often than every 20 minutes (TooManyProviderTokenUpdates), which a token
// per sender or per worker would soon cause.
//
// A token is regenerated when it reaches MaxAge, or when APNs refuses it
// (ExpiredProviderToken, InvalidProviderToken) and at least MinInterval has
// passed since it was made; never more often.
type APNsToken struct {
	// tok's embedded mutex guards tok and issued.
	tok         *token.Token
	issued      time.Time
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
	if err := t.generateLocked("first"); err != nil {
		return nil, err
	}
	return t, nil
}

// bearer returns the current token, first replacing it if it has reached
// its maximum age.
func (t *APNsToken) bearer() string {
	t.tok.Lock()
	defer t.tok.Unlock()
	if t.now().Sub(t.issued) >= t.maxAge {
		if err := t.generateLocked("age"); err != nil {
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
	if age := t.now().Sub(t.issued); age < t.minInterval {
		return false, t.minInterval - age
	}
	if err := t.generateLocked("refused"); err != nil {
		t.log.Error("apns provider token not regenerated", "err", err)
		return false, t.minInterval
	}
	return true, 0
}

// generateLocked makes a new token. It signs the JWT itself instead of
// calling token.Token.Generate, because Generate takes iat from the wall
// clock: iat must come from the clock that ages the token here, so that the
// age APNs computes from iat is the age this type acts on.
func (t *APNsToken) generateLocked(why string) error {
	issued := t.now()
	jt := &jwt.Token{
		Header: map[string]any{"alg": "ES256", "kid": t.tok.KeyID},
		Claims: jwt.MapClaims{"iss": t.tok.TeamID, "iat": issued.Unix()},
		Method: jwt.SigningMethodES256,
	}
	bearer, err := jt.SignedString(t.tok.AuthKey)
	if err != nil {
		return fmt.Errorf("apns token: sign: %w", err)
	}
	t.tok.Bearer, t.tok.IssuedAt = bearer, issued.Unix()
	t.issued = issued
	t.log.Info("apns provider token generated", "reason", why, "key_id", t.tok.KeyID)
	return nil
}
