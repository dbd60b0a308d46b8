package queue

import (
	"errors"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// KeyState is a keyring entry with its revocation, as this process's view
// of the control log holds it.
type KeyState struct {
	Key *signing.Key
	// Revocation is the kill of the key's scope that revoked it: when, by
	// which key, why. It is nil for a key that is not revoked.
	Revocation *api.Kill
}

// KeyLister is a keyring that can list its keys: *signing.Keyring, and
// the command's holder of the current keyring, which a SIGHUP replaces.
// Service.Keyring lists the keys of a Verifier whose signing.KeyLookup is
// one.
type KeyLister interface {
	Keys() []*signing.Key
}

var _ KeyLister = (*signing.Keyring)(nil)

// Keyring returns the keys the API accepts, in keyring order, each with
// its revocation, and the size of the control log the revocations were
// read from.
func (s *Service) Keyring() ([]KeyState, int64, error) {
	kl, ok := s.verifier.Keys().(KeyLister)
	if !ok {
		return nil, 0, errors.New("keyring: the verifier's keys cannot be listed")
	}
	revoked, version := s.control.revocations()
	keys := kl.Keys()
	out := make([]KeyState, len(keys))
	for i, k := range keys {
		out[i] = KeyState{Key: k}
		if r, ok := revoked[k.ID]; ok {
			out[i].Revocation = &r
		}
	}
	return out, version, nil
}
