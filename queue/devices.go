package queue

import (
	"context"
	"fmt"
	"slices"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// A register key registers devices into its own topics only: it may
// subscribe a device to topics its patterns match, change or remove only
// those subscriptions (a device's other topics are another owner's), and
// create at most its max_devices devices.

// PutDevice subscribes a device to exactly the given topics among those
// key k may register into, keeping its subscriptions to other topics.
func (s *Service) PutDevice(ctx context.Context, k *signing.Key, d api.Device, topics []string) ([]string, error) {
	if err := s.dataOK(); err != nil {
		return nil, err
	}
	if err := allowTopics(k, topics, ""); err != nil {
		return nil, err
	}
	reg, current, err := s.registry.registered(ctx, []api.Device{d})
	if err != nil {
		return nil, err
	}
	final := slices.DeleteFunc(slices.Clone(current[0]), k.AllowsTopic) // another owner's subscriptions stay
	final = append(final, topics...)
	slices.Sort(final)
	final = slices.Compact(final)
	if !reg[0] {
		if err := s.takeQuota(ctx, k, 1); err != nil {
			return nil, err
		}
	}
	if err := s.registry.Put(ctx, d, final); err != nil {
		return nil, err
	}
	return final, nil
}

// DeleteDevice removes a device from the topics key k registers into, and
// from the registry once it has no topic left. It reports whether k could
// see the device at all.
func (s *Service) DeleteDevice(ctx context.Context, k *signing.Key, d api.Device) (bool, error) {
	if err := s.dataOK(); err != nil {
		return false, err
	}
	reg, current, err := s.registry.registered(ctx, []api.Device{d})
	if err != nil {
		return false, err
	}
	topics := current[0]
	mine := slices.ContainsFunc(topics, k.AllowsTopic) || len(topics) == 0 && k.AllowsAll()
	if !reg[0] || !mine {
		return false, nil
	}
	rest := slices.DeleteFunc(slices.Clone(topics), k.AllowsTopic)
	if len(rest) > 0 {
		return true, s.registry.Put(ctx, d, rest)
	}
	if _, err := s.registry.Delete(ctx, d); err != nil {
		return false, err
	}
	s.releaseQuota(ctx, k, 1)
	return true, nil
}

// ImportDevices registers devices, adding the topics listed for each
// (which key k must be allowed to register into) to those it already has.
func (s *Service) ImportDevices(ctx context.Context, k *signing.Key, devices []api.ImportDevice) error {
	if err := s.dataOK(); err != nil {
		return err
	}
	all := make([]api.Device, len(devices))
	for i, d := range devices {
		if err := allowTopics(k, d.Topics, fmt.Sprintf("devices[%d]: ", i)); err != nil {
			return err
		}
		all[i] = d.Device()
	}
	reg, _, err := s.registry.registered(ctx, all)
	if err != nil {
		return err
	}
	fresh := 0
	for _, ok := range reg {
		if !ok {
			fresh++
		}
	}
	if err := s.takeQuota(ctx, k, fresh); err != nil {
		return err
	}
	if err := s.registry.Import(ctx, devices); err != nil {
		s.releaseQuota(ctx, k, fresh)
		return err
	}
	return nil
}

// allowTopics refuses topics key k may not register devices into.
func allowTopics(k *signing.Key, topics []string, where string) error {
	for _, t := range topics {
		if !k.AllowsTopic(t) {
			return api.Errorf(api.CodeTopicNotAllowed, "%skey %s may not register devices into topic %q", where, k.ID, t)
		}
	}
	return nil
}

// takeQuota counts n new devices against key k's max_devices, refusing
// (and counting nothing) when they would not fit.
func (s *Service) takeQuota(ctx context.Context, k *signing.Key, n int) error {
	if k.MaxDevices <= 0 || n == 0 {
		return nil
	}
	used, err := s.registry.addQuota(ctx, k.ID, int64(n))
	if err != nil {
		return err
	}
	if used > int64(k.MaxDevices) {
		s.releaseQuota(ctx, k, n)
		return api.Errorf(api.CodeDeviceQuotaExceeded, "key %s may create %d devices; %d more would make %d",
			k.ID, k.MaxDevices, n, used)
	}
	return nil
}

// releaseQuota gives n devices back to key k's max_devices.
func (s *Service) releaseQuota(ctx context.Context, k *signing.Key, n int) {
	if k.MaxDevices <= 0 || n == 0 {
		return
	}
	if _, err := s.registry.addQuota(ctx, k.ID, -int64(n)); err != nil {
		s.logger.Warn("device quota not released", "key_id", k.ID, "devices", n, "err", err)
	}
}
