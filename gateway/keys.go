package gateway

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/queue"
)

// listKeys answers GET /v1/keys: the keyring with each key's revocation.
// Only public facts leave: the public key as a fingerprint, never a
// private key (the gateway holds none).
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	states, version, err := s.svc.Keyring()
	if err != nil {
		s.fail(w, r, fmt.Errorf("list keys: %w", err))
		return
	}
	out := api.KeyList{Keys: make([]api.KeyInfo, 0, len(states)), Version: version}
	for _, st := range states {
		info, err := keyInfo(st)
		if err != nil {
			s.fail(w, r, fmt.Errorf("list keys: %w", err))
			return
		}
		out.Keys = append(out.Keys, info)
	}
	writeJSON(w, http.StatusOK, out)
}

// keyInfo describes one keyring entry for the API.
func keyInfo(st queue.KeyState) (api.KeyInfo, error) {
	k := st.Key
	der, err := x509.MarshalPKIXPublicKey(k.Public)
	if err != nil {
		return api.KeyInfo{}, fmt.Errorf("key %s: %w", k.ID, err)
	}
	sum := sha256.Sum256(der)
	info := api.KeyInfo{
		ID:              k.ID,
		Owner:           k.Owner,
		Roles:           make([]string, len(k.Roles)),
		Topics:          append([]string{}, k.Topics...),
		MaxAudience:     k.MaxAudience,
		Rate:            k.Rate.String(),
		Reach:           k.Reach.String(),
		ApprovalAbove:   k.ApprovalAbove,
		MaxDevices:      k.MaxDevices,
		PublicKeySHA256: hex.EncodeToString(sum[:]),
	}
	for i, role := range k.Roles {
		info.Roles[i] = string(role)
	}
	if rv := st.Revocation; rv != nil {
		info.Revoked, info.RevokedAt, info.RevokedBy, info.RevokedReason = true, rv.At, rv.By, rv.Reason
	}
	return info, nil
}
