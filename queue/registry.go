package queue

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// Registry is the device registry: every device, and the devices of each
// topic, as Redis sets of "<platform>:<token>" members.
type Registry struct {
	rdb  redis.UniversalClient
	keys Keys
}

// NewRegistry returns a registry on rdb.
func NewRegistry(rdb redis.UniversalClient, keys Keys) *Registry {
	return &Registry{rdb: rdb, keys: keys}
}

// member is a device's member string in registry sets and ledger fields:
// "<platform>:<token>".
func member(d api.Device) string { return string(d.Platform) + ":" + d.Token }

// parseMember splits a registry member back into a device, refusing one
// that is not well formed (Redis contents are not trusted).
func parseMember(m string) (api.Device, error) {
	p, tok, ok := strings.Cut(m, ":")
	d := api.Device{Platform: api.Platform(p), Token: tok}
	if !ok {
		return d, api.Errorf(api.CodeInvalidDevice, "device has no platform prefix")
	}
	if why := d.Invalid(); why != "" {
		return d, api.Errorf(api.CodeInvalidDevice, "%s", why)
	}
	return d, nil
}

// Put registers a device with exactly the given topics.
func (r *Registry) Put(ctx context.Context, d api.Device, topics []string) error {
	m := member(d)
	old, err := r.rdb.SMembers(ctx, r.keys.DeviceTopics(m)).Result()
	if err != nil {
		return fmt.Errorf("register device: %w", err)
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, t := range old {
			if !slices.Contains(topics, t) {
				p.SRem(ctx, r.keys.Topic(t), m)
			}
		}
		p.Del(ctx, r.keys.DeviceTopics(m))
		r.add(ctx, p, m, topics)
		return nil
	})
	if err != nil {
		return fmt.Errorf("register device: %w", err)
	}
	return nil
}

// add subscribes member m to topics (keeping its other subscriptions).
func (r *Registry) add(ctx context.Context, p redis.Pipeliner, m string, topics []string) {
	p.SAdd(ctx, r.keys.AllDevices(), m)
	for _, t := range topics {
		p.SAdd(ctx, r.keys.Topic(t), m)
		p.SAdd(ctx, r.keys.DeviceTopics(m), t)
	}
}

// Import registers devices, adding the topics listed for each to those it
// already has. It writes in one pipeline per call.
func (r *Registry) Import(ctx context.Context, devices []api.ImportDevice) error {
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, d := range devices {
			r.add(ctx, p, member(d.Device()), d.Topics)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("import devices: %w", err)
	}
	return nil
}

// Delete removes devices from every topic and from the registry.
// It reports how many were registered.
func (r *Registry) Delete(ctx context.Context, devices ...api.Device) (int, error) {
	if len(devices) == 0 {
		return 0, nil
	}
	members := make([]string, len(devices))
	for i, d := range devices {
		members[i] = member(d)
	}
	topics := make([]*redis.StringSliceCmd, len(members))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			topics[i] = p.SMembers(ctx, r.keys.DeviceTopics(m))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("remove devices: %w", err)
	}
	var removed *redis.IntCmd
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			for _, t := range topics[i].Val() {
				p.SRem(ctx, r.keys.Topic(t), m)
			}
			p.Del(ctx, r.keys.DeviceTopics(m))
		}
		removed = p.SRem(ctx, r.keys.AllDevices(), toAny(members)...)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("remove devices: %w", err)
	}
	return int(removed.Val()), nil
}

// Count returns how many devices a topic has; the empty topic counts
// every device.
func (r *Registry) Count(ctx context.Context, topic string) (int64, error) {
	n, err := r.rdb.SCard(ctx, r.setKey(topic)).Result()
	if err != nil {
		return 0, fmt.Errorf("count devices: %w", err)
	}
	return n, nil
}

// Topics returns the topics a device is subscribed to.
func (r *Registry) Topics(ctx context.Context, d api.Device) ([]string, error) {
	ts, err := r.rdb.SMembers(ctx, r.keys.DeviceTopics(member(d))).Result()
	if err != nil {
		return nil, fmt.Errorf("read device topics: %w", err)
	}
	slices.Sort(ts)
	return ts, nil
}

// setKey is the set of a topic, or of every device for the empty topic.
func (r *Registry) setKey(topic string) string {
	if topic == "" {
		return r.keys.AllDevices()
	}
	return r.keys.Topic(topic)
}

// scan reads one page of a topic's members (every device for the empty
// topic) from cursor, with SSCAN: the set is never loaded whole.
func (r *Registry) scan(ctx context.Context, topic string, cursor uint64, count int64) ([]string, uint64, error) {
	ms, next, err := r.rdb.SScan(ctx, r.setKey(topic), cursor, "", count).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("scan devices: %w", err)
	}
	return ms, next, nil
}

// contains reports, per member, whether it is in a topic (every device
// for the empty topic).
func (r *Registry) contains(ctx context.Context, topic string, members []string) ([]bool, error) {
	in, err := r.rdb.SMIsMember(ctx, r.setKey(topic), toAny(members)...).Result()
	if err != nil {
		return nil, fmt.Errorf("check audience: %w", err)
	}
	return in, nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// members returns every member of a topic (every device for the empty
// topic). Callers read small sets only: a topic is otherwise scanned.
func (r *Registry) members(ctx context.Context, topic string) ([]string, error) {
	ms, err := r.rdb.SMembers(ctx, r.setKey(topic)).Result()
	if err != nil {
		return nil, fmt.Errorf("read devices: %w", err)
	}
	return ms, nil
}

// registered reports, per device, whether it is registered, and the topics
// it is subscribed to.
func (r *Registry) registered(ctx context.Context, devices []api.Device) ([]bool, [][]string, error) {
	members := make([]any, len(devices))
	topics := make([]*redis.StringSliceCmd, len(devices))
	var in *redis.BoolSliceCmd
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, d := range devices {
			members[i] = member(d)
			topics[i] = p.SMembers(ctx, r.keys.DeviceTopics(member(d)))
		}
		in = p.SMIsMember(ctx, r.keys.AllDevices(), members...)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read devices: %w", err)
	}
	out := make([][]string, len(devices))
	for i := range devices {
		out[i] = topics[i].Val()
	}
	return in.Val(), out, nil
}

// inScope reports, per device, whether key k may send to it: the device is
// registered, and subscribed to a topic k may send to (any device, for a
// key that may send to all).
func (r *Registry) inScope(ctx context.Context, k *signing.Key, devices []api.Device) ([]bool, error) {
	if len(devices) == 0 {
		return nil, nil
	}
	reg, topics, err := r.registered(ctx, devices)
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(devices))
	for i := range devices {
		out[i] = reg[i] && (k.AllowsAll() || slices.ContainsFunc(topics[i], k.AllowsTopic))
	}
	return out, nil
}

// addQuota adds n (negative to release) to the devices register key keyID
// has created, and returns the new count.
func (r *Registry) addQuota(ctx context.Context, keyID string, n int64) (int64, error) {
	used, err := r.rdb.IncrBy(ctx, r.keys.DeviceQuota(keyID), n).Result()
	if err != nil {
		return 0, fmt.Errorf("device quota: %w", err)
	}
	return used, nil
}
