package queue

import (
	"context"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// SeesAll reports whether key k may read every sender's broadcasts:
// admins, and approvers, who must read what they are asked to approve.
// Any other key reads only the broadcasts it submitted
// (docs/ARCHITECTURE.md, "Who reads which broadcast").
func SeesAll(k *signing.Key) bool {
	return k.Has(signing.RoleAdmin) || k.Has(signing.RoleApprove)
}

// Visible returns nil when key by may read broadcast id: any broadcast
// when SeesAll(by), else only one that by submitted. Another key's
// broadcast is answered with the same not-found problem as an id that does
// not exist, so that a key cannot probe which ids exist.
func (s *Service) Visible(ctx context.Context, by *signing.Key, id string) error {
	if SeesAll(by) {
		return nil
	}
	if !api.ValidBroadcastID(id) {
		return api.Errorf(api.CodeNotFound, "no broadcast %q", id)
	}
	keyID, err := s.store.submitter(ctx, id)
	if err != nil {
		return err
	}
	if keyID != by.ID {
		return api.Errorf(api.CodeNotFound, "no broadcast %q", id)
	}
	return nil
}

// ListFor returns a page of the broadcasts key by may read, as List does:
// every broadcast when SeesAll(by), else only those by submitted, read
// from its own index so that the page costs the same however many
// broadcasts other keys sent.
func (s *Service) ListFor(ctx context.Context, by *signing.Key, state string, limit int, after string) (*api.ListPage, error) {
	if SeesAll(by) {
		return s.List(ctx, state, limit, after)
	}
	return s.listPage(ctx, s.keys.SenderIndex(by.ID), by.ID, state, limit, after)
}
