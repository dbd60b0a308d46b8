package sim

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The OAuth2 side of FCM: Google's token endpoint for service accounts
// (RFC 7523 JWT-bearer grant) and the bearer-token check on messages:send.

const (
	jwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	// assertionMaxLife is Google's limit on exp - iat of an assertion.
	assertionMaxLife = time.Hour
	// clockSkew is how far in the future an iat may be.
	clockSkew = 5 * time.Minute
)

// Scopes that allow sending: FCM accepts the messaging scope or the
// all-of-cloud one.
var sendScopes = []string{
	"https://www.googleapis.com/auth/firebase.messaging",
	"https://www.googleapis.com/auth/cloud-platform",
}

// oauthStore holds the access tokens issued.
type oauthStore struct {
	mu     sync.RWMutex
	tokens map[string]oauthToken
}

type oauthToken struct {
	expires time.Time
	canSend bool
}

// authResult is the verdict on a bearer token.
type authResult int

const (
	authOK authResult = iota
	authMissing
	authInvalid
	authScope
)

func (o *oauthStore) check(header string, now time.Time) authResult {
	scheme, tok, ok := strings.Cut(header, " ")
	if header == "" {
		return authMissing
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return authInvalid
	}
	o.mu.RLock()
	t, found := o.tokens[strings.TrimSpace(tok)]
	o.mu.RUnlock()
	switch {
	case !found || !now.Before(t.expires):
		return authInvalid
	case !t.canSend:
		return authScope
	}
	return authOK
}

func (o *oauthStore) issue(canSend bool, now time.Time, ttl time.Duration) string {
	var b [24]byte
	rand.Read(b[:])
	tok := "ya29.sim." + base64.RawURLEncoding.EncodeToString(b[:])
	o.mu.Lock()
	defer o.mu.Unlock()
	// Forget expired tokens now and then, so a long run does not grow.
	if len(o.tokens) >= 1024 {
		for k, t := range o.tokens {
			if !now.Before(t.expires) {
				delete(o.tokens, k)
			}
		}
	}
	o.tokens[tok] = oauthToken{expires: now.Add(ttl), canSend: canSend}
	return tok
}

// handleToken is POST /token: it exchanges a service-account assertion for
// an access token, answering errors as Google's token endpoint does
// (RFC 6749 section 5.2).
func (s *Sim) handleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable form")
		return
	}
	if g := r.PostForm.Get("grant_type"); g != jwtBearerGrant {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+g)
		return
	}
	t, err := parseJWS(r.PostForm.Get("assertion"))
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT: malformed assertion")
		return
	}
	now := s.now()
	iat, exp := unixTime(t.claims.Iat), unixTime(t.claims.Exp)
	switch {
	case !t.verifyRS256(&s.creds.saKey.PublicKey) || (t.header.Kid != "" && t.header.Kid != s.creds.saKeyID):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT Signature.")
	case t.claims.Iss != s.serviceAccountEmail():
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid email or User ID")
	case t.claims.Aud != s.TokenURL():
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT: audience is not the token endpoint")
	case t.claims.Iat == 0 || t.claims.Exp == 0 || iat.After(now.Add(clockSkew)) ||
		!exp.After(now) || exp.Sub(iat) > assertionMaxLife:
		oauthError(w, http.StatusBadRequest, "invalid_grant",
			"Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
	case strings.TrimSpace(t.claims.Scope) == "":
		oauthError(w, http.StatusBadRequest, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
	default:
		canSend := false
		for _, sc := range strings.Fields(t.claims.Scope) {
			for _, want := range sendScopes {
				canSend = canSend || sc == want
			}
		}
		tok := s.oauth.issue(canSend, now, s.cfg.OAuthTokenTTL)
		s.stats.oauthTokens.Add(1)
		s.log.Debug("fcm access token issued", slog.Bool("can_send", canSend))
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(map[string]any{
			"access_token": tok,
			"expires_in":   int(s.cfg.OAuthTokenTTL/time.Second) - 1,
			"token_type":   "Bearer",
		})
	}
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// serviceAccountEmail is the client_email of the generated service account.
func (s *Sim) serviceAccountEmail() string {
	return "firebase-adminsdk@" + s.cfg.ProjectID + ".iam.gserviceaccount.com"
}

// ServiceAccountJSON returns a Google service-account key file for the
// simulated project, whose token_uri is the simulator's token endpoint.
// google.JWTConfigFromJSON and google.CredentialsFromJSON read it.
func (s *Sim) ServiceAccountJSON() []byte {
	b, err := json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  s.cfg.ProjectID,
		"private_key_id":              s.creds.saKeyID,
		"private_key":                 string(s.creds.saKeyPEM),
		"client_email":                s.serviceAccountEmail(),
		"client_id":                   "100000000000000000001",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   s.TokenURL(),
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	}, "", "  ")
	if err != nil {
		panic(err) // a map of strings always marshals
	}
	return append(b, '\n')
}
