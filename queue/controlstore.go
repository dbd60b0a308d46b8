package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/pushgate/pushgate/controllog"
)

// controlStore keeps the control log in Redis (docs/ARCHITECTURE.md, "The
// control log"): requests waiting to be integrated, the integrated entries,
// the tree's stored hashes (to serve inclusion proofs) and the signed
// checkpoints. Nothing it reads is trusted: readers verify entries against
// a checkpoint signed by the log key, and checkpoints against that key.
type controlStore struct {
	rdb  redis.UniversalClient
	keys Keys
}

// pendingBatch is what an integrator read: the items at the head of the
// pending list, and how many items were ever taken from it before them.
type pendingBatch struct {
	items [][]byte
	taken int64
}

// appendPending adds an encoded entry to the pending list and wakes the
// integrators. A stop is also announced on the stop channel in the same
// round trip, so that workers can stop before the entry is integrated.
func (s *controlStore) appendPending(ctx context.Context, leaf []byte, stop bool) error {
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, s.keys.LogPending(), leaf)
		if stop {
			p.Publish(ctx, s.keys.StopChannel(), leaf)
		}
		p.Publish(ctx, s.keys.LogPendingChannel(), "1")
		return nil
	})
	if err != nil {
		return fmt.Errorf("control log: append: %w", err)
	}
	return nil
}

// maxBatchBytes bounds the entries one integration writes.
const maxBatchBytes = 8 << 20

// readPending reads up to n items from the head of the pending list and
// the count taken before them, consistently.
func (s *controlStore) readPending(ctx context.Context, n int64) (*pendingBatch, error) {
	var taken *redis.StringCmd
	var items *redis.StringSliceCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		taken = p.Get(ctx, s.keys.LogTaken())
		items = p.LRange(ctx, s.keys.LogPending(), 0, n-1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("control log: read pending: %w", err)
	}
	b := &pendingBatch{}
	if v := taken.Val(); v != "" {
		if b.taken, err = strconv.ParseInt(v, 10, 64); err != nil {
			return nil, fmt.Errorf("control log: pending counter %q is not a number", v)
		}
	}
	size := 0
	for _, it := range items.Val() {
		if size += len(it); size > maxBatchBytes && len(b.items) > 0 {
			break
		}
		b.items = append(b.items, []byte(it))
	}
	return b, nil
}

// integrateScript appends integrated entries and their stored hashes,
// stores the new checkpoint and takes the integrated items off the pending
// list — only if the log's checkpoint is still the one the integrator
// built on and nobody took pending items since it read them. Entries and
// hashes are written at their positions, over anything someone wrote past
// the signed end of the log. KEYS: entries, hashes, checkpoint,
// checkpoints, pending, taken. ARGV: 1 the checkpoint built on ("" for
// none), 2 its size, 3 the byte offset of the new stored hashes, 4 the
// taken count read, 5 items taken, 6 the new signed checkpoint, 7 the new
// stored hashes, 8... the leaves.
var integrateScript = redis.NewScript(`
if (redis.call('GET', KEYS[3]) or '') ~= ARGV[1] then return redis.error_reply('PGCONFLICT checkpoint') end
if tonumber(redis.call('GET', KEYS[6]) or '0') ~= tonumber(ARGV[4]) then return redis.error_reply('PGCONFLICT taken') end
local size = tonumber(ARGV[2])
for i = 8, #ARGV do
  redis.call('HSET', KEYS[1], tostring(size + i - 8), ARGV[i])
end
if #ARGV[7] > 0 then redis.call('SETRANGE', KEYS[2], tonumber(ARGV[3]), ARGV[7]) end
redis.call('SET', KEYS[3], ARGV[6])
if #ARGV > 7 then redis.call('HSET', KEYS[4], tostring(size + #ARGV - 7), ARGV[6]) end
local n = tonumber(ARGV[5])
if n > 0 then
  redis.call('LTRIM', KEYS[5], n, -1)
  redis.call('INCRBY', KEYS[6], n)
end
return 1
`)

// errIntegrateConflict is returned when another integrator got there
// first; the integration is read and tried again.
var errIntegrateConflict = errors.New("control log: another integrator changed the log")

// integrate writes one integration on top of the checkpoint base (nil for
// none) of a log of size entries: see integrateScript.
func (s *controlStore) integrate(ctx context.Context, base []byte, size int64, b *pendingBatch, taken int, leaves [][]byte, hashes []tlog.Hash, signed []byte) error {
	blob := make([]byte, 0, len(hashes)*tlog.HashSize)
	for _, h := range hashes {
		blob = append(blob, h[:]...)
	}
	args := make([]any, 0, 7+len(leaves))
	args = append(args, base, size, tlog.StoredHashCount(size)*tlog.HashSize, b.taken, taken, signed, blob)
	for _, l := range leaves {
		args = append(args, l)
	}
	err := integrateScript.Run(ctx, s.rdb, []string{s.keys.LogEntries(), s.keys.LogHashes(), s.keys.LogCheckpoint(),
		s.keys.LogCheckpoints(), s.keys.LogPending(), s.keys.LogTaken()}, args...).Err()
	if err != nil {
		if redisErrorPrefix(err, "PGCONFLICT") {
			return errIntegrateConflict
		}
		return fmt.Errorf("control log: integrate: %w", err)
	}
	if len(leaves) > 0 {
		if err := s.rdb.Publish(ctx, s.keys.LogChannel(), size+int64(len(leaves))).Err(); err != nil {
			return fmt.Errorf("control log: announce checkpoint: %w", err)
		}
	}
	return nil
}

// redisErrorPrefix reports whether err is a Redis error reply starting
// with prefix.
func redisErrorPrefix(err error, prefix string) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return len(msg) >= len(prefix) && msg[:len(prefix)] == prefix
}

// rejected records why the integrator refused pending requests, so that
// the API process waiting for one can say so: request id ("key nonce")
// → reason, kept for ten minutes.
func (s *controlStore) reject(ctx context.Context, reasons map[string]string) error {
	if len(reasons) == 0 {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for id, why := range reasons {
			p.HSet(ctx, s.keys.LogRejected(), id, why)
		}
		p.Expire(ctx, s.keys.LogRejected(), 10*time.Minute)
		return nil
	})
	if err != nil {
		return fmt.Errorf("control log: record rejections: %w", err)
	}
	return nil
}

// rejection returns why the integrator refused a request, or "".
func (s *controlStore) rejection(ctx context.Context, id string) (string, error) {
	why, err := s.rdb.HGet(ctx, s.keys.LogRejected(), id).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("control log: read rejections: %w", err)
	}
	return why, nil
}

// head reads the newest signed checkpoint; nil when there is none.
func (s *controlStore) head(ctx context.Context) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.keys.LogCheckpoint()).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("control log: read checkpoint: %w", err)
	}
	return b, nil
}

// entryChunk is how many entries one read fetches.
const entryChunk = 256

// entries reads the leaves of entries [from, to), calling each for every
// chunk in order. A missing entry is an error.
func (s *controlStore) entries(ctx context.Context, from, to int64, each func(first int64, leaves [][]byte) error) error {
	for first := from; first < to; first += entryChunk {
		last := min(first+entryChunk, to)
		fields := make([]string, 0, last-first)
		for i := first; i < last; i++ {
			fields = append(fields, strconv.FormatInt(i, 10))
		}
		vals, err := s.rdb.HMGet(ctx, s.keys.LogEntries(), fields...).Result()
		if err != nil {
			return fmt.Errorf("control log: read entries: %w", err)
		}
		leaves := make([][]byte, len(vals))
		for j, v := range vals {
			str, ok := v.(string)
			if !ok {
				return fmt.Errorf("%w: entry %d is missing", errLogInconsistent, first+int64(j))
			}
			leaves[j] = []byte(str)
		}
		if err := each(first, leaves); err != nil {
			return err
		}
	}
	return nil
}

// checkpoints returns the signed checkpoints stored for each size the log
// grew to: size → note.
func (s *controlStore) checkpoints(ctx context.Context) (map[int64][]byte, error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.LogCheckpoints()).Result()
	if err != nil {
		return nil, fmt.Errorf("control log: read checkpoints: %w", err)
	}
	out := make(map[int64][]byte, len(m))
	for k, v := range m {
		if n, err := strconv.ParseInt(k, 10, 64); err == nil {
			out[n] = []byte(v)
		}
	}
	return out, nil
}

// hashReader serves stored hashes from Redis, for inclusion proofs. What
// it returns is checked against a verified checkpoint by whoever uses the
// proof.
func (s *controlStore) hashReader(ctx context.Context) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		cmds := make([]*redis.StringCmd, len(indexes))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, idx := range indexes {
				cmds[i] = p.GetRange(ctx, s.keys.LogHashes(), idx*tlog.HashSize, (idx+1)*tlog.HashSize-1)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("control log: read hashes: %w", err)
		}
		out := make([]tlog.Hash, len(indexes))
		for i, c := range cmds {
			if len(c.Val()) != tlog.HashSize {
				return nil, fmt.Errorf("%w: stored hash %d is missing", errLogInconsistent, indexes[i])
			}
			copy(out[i][:], c.Val())
		}
		return out, nil
	})
}

// restore writes a verified log into an empty control log: entries, their
// stored hashes, the checkpoints, and the newest checkpoint. It refuses
// when the log in Redis is not empty. Requests still pending are kept.
func (s *controlStore) restore(ctx context.Context, leaves [][]byte, checkpoints map[int64][]byte, newest []byte) error {
	n, err := s.rdb.HLen(ctx, s.keys.LogEntries()).Result()
	if err != nil {
		return fmt.Errorf("control log: restore: %w", err)
	}
	if n > 0 {
		return fmt.Errorf("control log: restore: Redis already holds %d entries", n)
	}
	var tree controllog.Tree
	var blob []byte
	for _, l := range leaves {
		hs, err := tree.Append(l)
		if err != nil {
			return fmt.Errorf("control log: restore: %w", err)
		}
		for _, h := range hs {
			blob = append(blob, h[:]...)
		}
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.keys.LogEntries(), s.keys.LogHashes(), s.keys.LogCheckpoints())
		for first := 0; first < len(leaves); first += entryChunk {
			vals := make([]any, 0, 2*entryChunk)
			for i := first; i < min(first+entryChunk, len(leaves)); i++ {
				vals = append(vals, strconv.Itoa(i), leaves[i])
			}
			p.HSet(ctx, s.keys.LogEntries(), vals...)
		}
		if len(blob) > 0 {
			p.Set(ctx, s.keys.LogHashes(), blob, 0)
		}
		for size, c := range checkpoints {
			p.HSet(ctx, s.keys.LogCheckpoints(), strconv.FormatInt(size, 10), c)
		}
		p.Set(ctx, s.keys.LogCheckpoint(), newest, 0)
		p.Publish(ctx, s.keys.LogChannel(), len(leaves))
		return nil
	})
	if err != nil {
		return fmt.Errorf("control log: restore: %w", err)
	}
	return nil
}
