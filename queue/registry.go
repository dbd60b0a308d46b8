package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// Registry is the device registry. Every device registered once has a
// permanent device number (dense, from 0, never reused for another
// device); every device and the devices of each topic are bitmaps over
// those numbers. A planner walks a topic in number order, so its position
// is a device number, valid across Redis restarts and failovers
// (docs/ARCHITECTURE.md, "The device registry").
type Registry struct {
	rdb  redis.UniversalClient
	keys Keys
}

// NewRegistry returns a registry on rdb.
func NewRegistry(rdb redis.UniversalClient, keys Keys) *Registry {
	return &Registry{rdb: rdb, keys: keys}
}

// member is a device's member string in the registry and ledger fields:
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

// maxDeviceNumber bounds device numbers, and so the size of a topic
// bitmap (256 MiB), whatever the counter in Redis says.
const maxDeviceNumber = 1 << 31

// numberScript hands out device numbers: a device's existing number, or
// the next one. KEYS[1] counter, KEYS[2] member → number, KEYS[3] number →
// member; ARGV members. Returns the numbers in order.
var numberScript = redis.NewScript(`
local out = {}
for i = 1, #ARGV do
  local m = ARGV[i]
  local n = redis.call('HGET', KEYS[2], m)
  if not n then
    n = redis.call('INCR', KEYS[1]) - 1
    if n >= ` + strconv.Itoa(maxDeviceNumber) + ` or n < 0 then return redis.error_reply('ERR device numbers exhausted') end
    redis.call('HSET', KEYS[2], m, n)
    redis.call('HSET', KEYS[3], n, m)
  end
  out[i] = tonumber(n)
end
return out
`)

// number returns the device numbers of members, assigning new ones.
func (r *Registry) number(ctx context.Context, members []string) ([]int64, error) {
	if len(members) == 0 {
		return nil, nil
	}
	nums, err := numberScript.Run(ctx, r.rdb, []string{r.keys.DeviceSeq(), r.keys.DeviceNumbers(), r.keys.DeviceMembers()},
		toAny(members)...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("number devices: %w", err)
	}
	if len(nums) != len(members) {
		return nil, errors.New("number devices: short reply")
	}
	return nums, nil
}

// numbers returns the device numbers of members, -1 for a device never
// registered. Numbers read from Redis out of range count as none.
func (r *Registry) numbers(ctx context.Context, members []string) ([]int64, error) {
	if len(members) == 0 {
		return nil, nil
	}
	vals, err := r.rdb.HMGet(ctx, r.keys.DeviceNumbers(), members...).Result()
	if err != nil {
		return nil, fmt.Errorf("read device numbers: %w", err)
	}
	out := make([]int64, len(vals))
	for i, v := range vals {
		out[i] = -1
		if s, ok := v.(string); ok {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 && n < maxDeviceNumber {
				out[i] = n
			}
		}
	}
	return out, nil
}

// readBits reads, per number, the bit of a bitmap (false for -1), in one
// pipeline of GETBITs (BITFIELD would be one command, but not every Redis
// the project runs on has it).
func readBits(ctx context.Context, rdb redis.UniversalClient, key string, nums []int64) ([]bool, error) {
	out := make([]bool, len(nums))
	cmds := make([]*redis.IntCmd, len(nums))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range nums {
			if n >= 0 {
				cmds[i] = p.GetBit(ctx, key, n)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read device bits: %w", err)
	}
	for i, c := range cmds {
		out[i] = c != nil && c.Val() == 1
	}
	return out, nil
}

// Put registers a device with exactly the given topics.
func (r *Registry) Put(ctx context.Context, d api.Device, topics []string) error {
	m := member(d)
	old, err := r.rdb.SMembers(ctx, r.keys.DeviceTopics(m)).Result()
	if err != nil {
		return fmt.Errorf("register device: %w", err)
	}
	nums, err := r.number(ctx, []string{m})
	if err != nil {
		return fmt.Errorf("register device: %w", err)
	}
	_, err = r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, t := range old {
			if !slices.Contains(topics, t) {
				p.SetBit(ctx, r.keys.Topic(t), nums[0], 0)
			}
		}
		p.Del(ctx, r.keys.DeviceTopics(m))
		r.add(ctx, p, m, nums[0], topics)
		return nil
	})
	if err != nil {
		return fmt.Errorf("register device: %w", err)
	}
	return nil
}

// add subscribes member m, device number n, to topics (keeping its other
// subscriptions).
func (r *Registry) add(ctx context.Context, p redis.Pipeliner, m string, n int64, topics []string) {
	p.SetBit(ctx, r.keys.AllDevices(), n, 1)
	for _, t := range topics {
		p.SetBit(ctx, r.keys.Topic(t), n, 1)
		p.SAdd(ctx, r.keys.DeviceTopics(m), t)
	}
}

// Import registers devices, adding the topics listed for each to those it
// already has. It numbers them in one script and writes in one pipeline
// per call.
func (r *Registry) Import(ctx context.Context, devices []api.ImportDevice) error {
	members := make([]string, len(devices))
	for i, d := range devices {
		members[i] = member(d.Device())
	}
	nums, err := r.number(ctx, members)
	if err != nil {
		return fmt.Errorf("import devices: %w", err)
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, d := range devices {
			r.add(ctx, p, members[i], nums[i], d.Topics)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("import devices: %w", err)
	}
	return nil
}

// Delete removes devices from every topic and from the registry; their
// numbers stay theirs. It reports how many were registered.
func (r *Registry) Delete(ctx context.Context, devices ...api.Device) (int, error) {
	if len(devices) == 0 {
		return 0, nil
	}
	members := make([]string, len(devices))
	for i, d := range devices {
		members[i] = member(d)
	}
	nums, err := r.numbers(ctx, members)
	if err != nil {
		return 0, fmt.Errorf("remove devices: %w", err)
	}
	topics := make([]*redis.StringSliceCmd, len(members))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			topics[i] = p.SMembers(ctx, r.keys.DeviceTopics(m))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("remove devices: %w", err)
	}
	var was []*redis.IntCmd
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			p.Del(ctx, r.keys.DeviceTopics(m))
			if nums[i] < 0 {
				continue
			}
			for _, t := range topics[i].Val() {
				p.SetBit(ctx, r.keys.Topic(t), nums[i], 0)
			}
			was = append(was, p.SetBit(ctx, r.keys.AllDevices(), nums[i], 0))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("remove devices: %w", err)
	}
	removed := 0
	for _, c := range was {
		removed += int(c.Val())
	}
	return removed, nil
}

// Count returns how many devices a topic has; the empty topic counts
// every device.
func (r *Registry) Count(ctx context.Context, topic string) (int64, error) {
	n, err := r.rdb.BitCount(ctx, r.setKey(topic), nil).Result()
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

// setKey is the bitmap of a topic, or of every device for the empty
// topic.
func (r *Registry) setKey(topic string) string {
	if topic == "" {
		return r.keys.AllDevices()
	}
	return r.keys.Topic(topic)
}

// scanChunk is how many bytes of a bitmap one read takes: 65,536 device
// numbers.
const scanChunk = 8192

// scan reads up to count set bits of a bitmap from number cursor on, in
// number order, a chunk at a time: the bitmap is never loaded whole. It
// returns the numbers found and the cursor to go on from; done reports
// that the bitmap has no more bits after them.
func scanBits(ctx context.Context, rdb redis.UniversalClient, key string, cursor int64, count int) (nums []int64, next int64, done bool, err error) {
	for len(nums) < count {
		off := cursor / 8
		chunk, err := rdb.GetRange(ctx, key, off, off+scanChunk-1).Bytes()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, 0, false, fmt.Errorf("scan devices: %w", err)
		}
		for i, b := range chunk {
			if b == 0 {
				continue
			}
			for bit := range 8 {
				if b&(0x80>>bit) == 0 {
					continue
				}
				n := (off+int64(i))*8 + int64(bit)
				if n < cursor {
					continue
				}
				nums = append(nums, n)
				if len(nums) == count {
					return nums, n + 1, false, nil
				}
			}
		}
		cursor = (off + int64(len(chunk))) * 8
		if len(chunk) < scanChunk || cursor >= maxDeviceNumber {
			return nums, cursor, true, nil
		}
	}
	return nums, cursor, false, nil
}

// scan reads up to count devices of a topic (every device for the empty
// topic) from device number cursor on: their numbers and members, the
// cursor to go on from, and whether the topic has no devices after them.
// A number without a member (Redis is not trusted) is left out.
func (r *Registry) scan(ctx context.Context, topic string, cursor int64, count int) ([]int64, []string, int64, bool, error) {
	nums, next, done, err := scanBits(ctx, r.rdb, r.setKey(topic), cursor, count)
	if err != nil || len(nums) == 0 {
		return nil, nil, next, done, err
	}
	nums, members, err := r.membersOf(ctx, nums)
	return nums, members, next, done, err
}

// membersOf returns the members of device numbers, leaving out numbers
// that have none.
func (r *Registry) membersOf(ctx context.Context, nums []int64) ([]int64, []string, error) {
	fields := make([]string, len(nums))
	for i, n := range nums {
		fields[i] = strconv.FormatInt(n, 10)
	}
	vals, err := r.rdb.HMGet(ctx, r.keys.DeviceMembers(), fields...).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("read devices: %w", err)
	}
	keptNums := nums[:0]
	members := make([]string, 0, len(nums))
	for i, v := range vals {
		if m, ok := v.(string); ok {
			keptNums = append(keptNums, nums[i])
			members = append(members, m)
		}
	}
	return keptNums, members, nil
}

// contains reports, per member, whether it is in a topic (every device
// for the empty topic), and its device number (-1 for none).
func (r *Registry) contains(ctx context.Context, topic string, members []string) ([]bool, []int64, error) {
	nums, err := r.numbers(ctx, members)
	if err != nil {
		return nil, nil, fmt.Errorf("check audience: %w", err)
	}
	in, err := readBits(ctx, r.rdb, r.setKey(topic), nums)
	if err != nil {
		return nil, nil, fmt.Errorf("check audience: %w", err)
	}
	return in, nums, nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// members returns every member of a topic (every device for the empty
// topic). Callers read small topics only: a topic is otherwise scanned.
func (r *Registry) members(ctx context.Context, topic string) ([]string, error) {
	var out []string
	var cursor int64
	for {
		_, ms, next, done, err := r.scan(ctx, topic, cursor, scanCount)
		if err != nil {
			return nil, err
		}
		out = append(out, ms...)
		if done {
			return out, nil
		}
		cursor = next
	}
}

// registered reports, per device, whether it is registered, and the topics
// it is subscribed to.
func (r *Registry) registered(ctx context.Context, devices []api.Device) ([]bool, [][]string, error) {
	members := make([]string, len(devices))
	for i, d := range devices {
		members[i] = member(d)
	}
	nums, err := r.numbers(ctx, members)
	if err != nil {
		return nil, nil, fmt.Errorf("read devices: %w", err)
	}
	in, err := readBits(ctx, r.rdb, r.keys.AllDevices(), nums)
	if err != nil {
		return nil, nil, fmt.Errorf("read devices: %w", err)
	}
	topics := make([]*redis.StringSliceCmd, len(devices))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			topics[i] = p.SMembers(ctx, r.keys.DeviceTopics(m))
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read devices: %w", err)
	}
	out := make([][]string, len(devices))
	for i := range devices {
		if in[i] {
			out[i] = topics[i].Val()
		}
	}
	return in, out, nil
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
