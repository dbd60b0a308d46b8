package queue

import "strconv"

// Keys builds every Redis key and channel pushgate uses (asynq's own keys
// aside, which asynq names under "asynq:"). Nothing else in the project
// spells a key.
//
// Keys of one broadcast share the hash tag {bc:<id>} so that the Lua scripts
// that touch a broadcast's record and ledger together stay on one slot of a
// Redis Cluster.
type Keys struct {
	prefix string
}

// NewKeys returns a key builder whose keys all start with prefix and a
// colon. An empty prefix means "pg".
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = "pg"
	}
	return Keys{prefix: prefix}
}

func (k Keys) bc(id string) string { return k.prefix + ":{bc:" + id + "}" }

// Broadcast is the hash holding a broadcast's record: state, counters,
// sender key, audience summary, timestamps.
func (k Keys) Broadcast(id string) string { return k.bc(id) }

// Envelope holds the signed submission of a broadcast exactly as received.
func (k Keys) Envelope(id string) string { return k.bc(id) + ":env" }

// Ledger is the hash of per-device outcomes of a broadcast: field
// "<platform>:<token>", value an outcome letter followed by the batch
// sequence that owns the device.
func (k Keys) Ledger(id string) string { return k.bc(id) + ":ledger" }

// RecallLedger is the ledger of a broadcast's recall messages.
func (k Keys) RecallLedger(id string) string { return k.bc(id) + ":recall-ledger" }

// Plan is the hash of a broadcast's planning progress (cursor, next batch
// sequence, devices planned), and likewise RecallPlan for its recall.
func (k Keys) Plan(id string) string { return k.bc(id) + ":plan" }

// RecallPlan is the planning progress of a broadcast's recall.
func (k Keys) RecallPlan(id string) string { return k.bc(id) + ":recall-plan" }

// Planned is the bitmap of a broadcast's audience positions planned for
// delivery: device numbers for a topic audience, indices into the signed
// list for a tokens audience. Done is the bitmap of positions with a final
// outcome; a broadcast completes only when every planned position is done.
func (k Keys) Planned(id string) string { return k.bc(id) + ":planned" }

// Done is the bitmap of a broadcast's positions with a final outcome.
func (k Keys) Done(id string) string { return k.bc(id) + ":done" }

// Delayed is the bitmap of a broadcast's positions a rate limit has held
// back at least once: rate_limited_retries counts devices, not deferrals.
func (k Keys) Delayed(id string) string { return k.bc(id) + ":delayed" }

// RecallPlanned and RecallDone are the same bitmaps for a recall.
func (k Keys) RecallPlanned(id string) string { return k.bc(id) + ":recall-planned" }

// RecallDone is the bitmap of recall positions with a final outcome.
func (k Keys) RecallDone(id string) string { return k.bc(id) + ":recall-done" }

// Sweep is held by the worker sweeping a stalled broadcast.
func (k Keys) Sweep(id string) string { return k.bc(id) + ":sweep" }

// Scratch is a key a completion check writes and deletes within one
// script.
func (k Keys) Scratch(id string) string { return k.bc(id) + ":scratch" }

// Timeline is the list of a broadcast's events, oldest first.
func (k Keys) Timeline(id string) string { return k.bc(id) + ":timeline" }

// BroadcastIndex is the sorted set of broadcast ids scored by creation time
// in milliseconds.
func (k Keys) BroadcastIndex() string { return k.prefix + ":broadcasts" }

// SenderIndex is the sorted set of the ids of the broadcasts one key
// submitted, scored by creation time in milliseconds: a key that may read
// only its own broadcasts lists them from it.
func (k Keys) SenderIndex(keyID string) string { return k.prefix + ":broadcasts:key:" + keyID }

// Idempotency maps a sender key's idempotency key to the broadcast it
// created and the SHA-256 of the body that created it.
func (k Keys) Idempotency(keyID, idemKey string) string {
	return k.prefix + ":idem:" + keyID + ":" + idemKey
}

// Nonce is the replay-guard key of a signature nonce.
func (k Keys) Nonce(keyID, nonce string) string {
	return k.prefix + ":nonce:" + keyID + ":" + nonce
}

// The registry's keys. Every registered device has a permanent, dense
// device number; topic membership is a bitmap over those numbers, so a
// planner's position in a topic is a number that stays valid across
// restarts and failovers (docs/ARCHITECTURE.md, "The device registry").
// The number maps share the hash tag {dev}, so that one script assigns
// numbers.

// DeviceSeq is the counter of device numbers handed out.
func (k Keys) DeviceSeq() string { return k.prefix + ":{dev}:seq" }

// DeviceNumbers is the hash of device member ("<platform>:<token>") →
// device number. Numbers are never taken back: a device registered again
// gets its old number.
func (k Keys) DeviceNumbers() string { return k.prefix + ":{dev}:num" }

// DeviceMembers is the hash of device number → device member.
func (k Keys) DeviceMembers() string { return k.prefix + ":{dev}:member" }

// Topic is the bitmap of a topic's devices: bit n is set when device
// number n is subscribed.
func (k Keys) Topic(name string) string { return k.prefix + ":topicbits:" + name }

// AllDevices is the bitmap of every registered device.
func (k Keys) AllDevices() string { return k.prefix + ":devicebits" }

// DeviceTopics is the set of topics a device is subscribed to, so that
// removing a device can leave every topic.
func (k Keys) DeviceTopics(device string) string { return k.prefix + ":device:" + device }

// ProviderRate is the rate-limit key of a platform; redis_rate prefixes it
// with "rate:".
func (k Keys) ProviderRate(platform string) string { return k.prefix + ":rl:provider:" + platform }

// ProviderPause holds the end of a platform's provider pause in Unix
// milliseconds, only ever extended, expiring when the pause ends.
func (k Keys) ProviderPause(platform string) string { return k.prefix + ":pause:" + platform }

// ProviderHealth is the hash in which workers report a provider that
// refuses the deployment's credential: reason, since, at, worker. It
// expires when no worker renews it.
func (k Keys) ProviderHealth(platform string) string { return k.prefix + ":health:" + platform }

// SenderRate is the rate-limit key of a sender key; redis_rate prefixes it
// with "rate:".
func (k Keys) SenderRate(keyID string) string { return k.prefix + ":rl:sender:" + keyID }

// DeviceRate is the hash counting pushes per device in one window of the
// per-device limit. Both windows of a check share one hash tag.
func (k Keys) DeviceRate(window int64) string {
	return k.prefix + ":{rl:device}:" + strconv.FormatInt(window, 10)
}

// AckChannel is the pub/sub channel on which workers announce the control
// log size they have applied.
func (k Keys) AckChannel() string { return k.prefix + ":kill-acks" }

// Workers is the sorted set of live workers scored by when their view of
// the control log stops being fresh, in milliseconds. It shares the hash
// tag {workers} with the in-flight hashes, so that one script reaps a dead
// worker (docs/ARCHITECTURE.md, "Dead workers").
func (k Keys) Workers() string { return k.prefix + ":{workers}" }

// Inflight is the hash of the tasks a worker is running: asynq task id →
// the encoded task, plus the field "~session" naming the worker's current
// session. It expires unless the worker heartbeats.
func (k Keys) Inflight(worker string) string { return k.prefix + ":{workers}:inflight:" + worker }

// WorkerAcks is the hash of the control log size each worker has
// applied.
func (k Keys) WorkerAcks() string { return k.prefix + ":worker-acks" }

// Reach is the sorted set of the devices a sender key's broadcasts
// reached: an 8-byte hash of each device, scored by when it was last
// reached (ms). Its entries older than the key's reach window are trimmed.
func (k Keys) Reach(keyID string) string { return k.prefix + ":{reach:" + keyID + "}" }

// DeviceQuota counts the devices a register key created.
func (k Keys) DeviceQuota(keyID string) string { return k.prefix + ":quota:" + keyID }

// SecurityEvents is the counter hash of refused tasks by reason.
func (k Keys) SecurityEvents() string { return k.prefix + ":security" }

// Deployment is the deployment marker: a random id set once, with SET NX,
// by the first process on an empty Redis. A process that finds it missing
// or changed knows that Redis lost data (docs/ARCHITECTURE.md, "Redis data
// loss").
func (k Keys) Deployment() string { return k.prefix + ":deployment" }

// The control log's keys share the hash tag {log}, so that one script
// integrates a batch (docs/ARCHITECTURE.md, "The control log").

// LogPending is the list of encoded entries waiting to be integrated.
func (k Keys) LogPending() string { return k.prefix + ":{log}:pending" }

// LogTaken counts the items ever taken off LogPending, so that two
// integrators never take the same ones.
func (k Keys) LogTaken() string { return k.prefix + ":{log}:taken" }

// LogEntries is the hash of integrated entries: index → leaf bytes.
func (k Keys) LogEntries() string { return k.prefix + ":{log}:entries" }

// LogHashes is the string of the tree's stored hashes, 32 bytes each in
// tlog's storage order, from which inclusion proofs are served.
func (k Keys) LogHashes() string { return k.prefix + ":{log}:hashes" }

// LogCheckpoint is the newest signed checkpoint.
func (k Keys) LogCheckpoint() string { return k.prefix + ":{log}:checkpoint" }

// LogCheckpoints is the hash of the first checkpoint signed at each size:
// size → note, for exports.
func (k Keys) LogCheckpoints() string { return k.prefix + ":{log}:checkpoints" }

// LogRejected is the hash of requests the integrator refused: "key nonce"
// → reason.
func (k Keys) LogRejected() string { return k.prefix + ":{log}:rejected" }

// LogChannel is the pub/sub channel on which a grown log's size is
// announced.
func (k Keys) LogChannel() string { return k.prefix + ":log-checkpoints" }

// LogPendingChannel wakes integrators when a request was appended.
func (k Keys) LogPendingChannel() string { return k.prefix + ":log-pending" }

// StopChannel carries the signed requests of kills, revocations, cancels
// and recalls as they are appended, so that workers stop on the signature
// before the entry is integrated.
func (k Keys) StopChannel() string { return k.prefix + ":stops" }
