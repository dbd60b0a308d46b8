package queue

import (
	"context"
	"fmt"
)

// VerifyAsWorker verifies broadcast id's stored envelope as a worker does
// before planning it (envelopeVerifier.broadcast, with an empty cache), for
// tests outside the package that drive the API.
func (s *Service) VerifyAsWorker(ctx context.Context, id string) error {
	raw, err := s.rdb.Get(ctx, s.keys.Envelope(id)).Bytes()
	if err != nil {
		return fmt.Errorf("read envelope: %w", err)
	}
	ev := newEnvelopeVerifier(s.verifier, s.control.verifier, s.control, s.policy.EnvelopeMaxAge, s.policy.MaxTTL, 1)
	_, err = ev.broadcast(ctx, id, raw)
	return err
}
