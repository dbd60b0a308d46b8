package queue

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/hibiken/asynq"
	"github.com/pushgate/pushgate/api"
)

// Task types.
const (
	TypePlan          = "pushgate:plan"
	TypeDeliver       = "pushgate:deliver"
	TypeRecallPlan    = "pushgate:recall-plan"
	TypeRecallDeliver = "pushgate:recall-deliver"
	// TypeApprovalExpiry expires a broadcast still awaiting approval at the
	// end of its window.
	TypeApprovalExpiry = "pushgate:approval-expiry"
)

// Queues. Workers serve them in strict priority: recalls first, then
// planning (quick, and it feeds delivery), then delivery.
const (
	QueueRecall  = "pushgate-recall"
	QueuePlan    = "pushgate-plan"
	QueueDeliver = "pushgate-deliver"
)

// MaxBatch is the largest number of devices in one deliver task.
const MaxBatch = 500

// planPayload names the broadcast to plan (or whose recall to plan).
type planPayload struct {
	Broadcast string `json:"b"`
}

// PlanTask returns the task that plans broadcast id, as the API enqueues it
// (on QueuePlan). The demo and the tests enqueue such tasks by hand to play
// someone who can write to the queue: a worker plans only what a verified
// envelope says, whatever the task claims.
func PlanTask(id string) *asynq.Task {
	payload, err := json.Marshal(planPayload{Broadcast: id})
	if err != nil {
		panic(fmt.Sprintf("queue: encode plan task: %v", err)) // a struct of one string always encodes
	}
	return asynq.NewTask(TypePlan, payload)
}

// batchPayload is one batch of devices of one platform, as a task
// carries it. Everything about what to send comes from the broadcast's
// verified envelope; the payload only says to whom, and it is checked
// against the audience.
type batchPayload struct {
	Broadcast string       `json:"b"`
	Seq       int64        `json:"s"`
	Gen       int          `json:"g"`
	Attempt   int          `json:"a"`
	Platform  api.Platform `json:"p"`
	Tokens    []string     `json:"t"`
}

// taskID is the asynq task id of a batch generation: a retried plan or
// batch that enqueues the same generation again collides with it instead of
// enqueuing it twice.
func (p *batchPayload) taskID(kind string) string {
	return kind + ":" + p.Broadcast + ":" + strconv.FormatInt(p.Seq, 10) + ":" + strconv.Itoa(p.Gen)
}

// batch is a decoded batch task. Along one delivery a device is its index
// in the batch: its token is Tokens[i] and its registry and ledger member
// members[i], built once; pos[i] is its position in the broadcast's
// audience (-1 for none), which the worker looks up itself (the payload
// does not carry it).
type batch struct {
	batchPayload
	members []string
	pos     []int64
}

// pick returns the members of the devices at indices.
func (b *batch) pick(indices []int) []string {
	out := make([]string, len(indices))
	for j, i := range indices {
		out[j] = b.members[i]
	}
	return out
}

// tokens returns the tokens of the devices at indices.
func (b *batch) tokens(indices []int) []string {
	out := make([]string, len(indices))
	for j, i := range indices {
		out[j] = b.Tokens[i]
	}
	return out
}

// devices returns the devices at indices.
func (b *batch) devices(indices []int) []api.Device {
	out := make([]api.Device, len(indices))
	for j, i := range indices {
		out[j] = api.Device{Platform: b.Platform, Token: b.Tokens[i]}
	}
	return out
}

// position returns the audience position of the device at index i, -1
// when it has none.
func (b *batch) position(i int) int64 {
	if b.pos == nil {
		return -1
	}
	return b.pos[i]
}

// positions returns the audience positions of the devices at indices.
func (b *batch) positions(indices []int) []int64 {
	out := make([]int64, len(indices))
	for j, i := range indices {
		out[j] = b.position(i)
	}
	return out
}

// triples returns member, letter, position triples of final outcomes, as
// the ledger scripts take them.
func (b *batch) triples(fs []final) []any {
	out := make([]any, 0, 3*len(fs))
	for _, f := range fs {
		out = append(out, b.members[f.i], f.letter, b.position(f.i))
	}
	return out
}

// next is the follow-up generation of the batch for the devices at
// indices.
func (b *batch) next(attempt int, indices []int) *batchPayload {
	return &batchPayload{Broadcast: b.Broadcast, Seq: b.Seq, Gen: b.Gen + 1, Attempt: attempt,
		Platform: b.Platform, Tokens: b.tokens(indices)}
}

// decodePlan decodes a plan task's payload. Task payloads come from Redis
// and are not trusted: anything malformed is forged.
func decodePlan(b []byte) (*planPayload, error) {
	var p planPayload
	if err := json.Unmarshal(b, &p); err != nil || !api.ValidBroadcastID(p.Broadcast) {
		return nil, fmt.Errorf("%w: malformed plan task", errForged)
	}
	return &p, nil
}

// decodeBatch decodes a batch task's payload, refusing anything that is
// not a well-formed batch of one platform's devices.
func decodeBatch(raw []byte) (*batch, error) {
	var b batch
	if err := json.Unmarshal(raw, &b.batchPayload); err != nil {
		return nil, fmt.Errorf("%w: malformed batch task", errForged)
	}
	if !api.ValidBroadcastID(b.Broadcast) || b.Seq < 0 || b.Gen < 0 || b.Attempt < 0 || !b.Platform.Valid() ||
		len(b.Tokens) == 0 || len(b.Tokens) > MaxBatch {
		return nil, fmt.Errorf("%w: malformed batch task", errForged)
	}
	b.members = make([]string, len(b.Tokens))
	for i, t := range b.Tokens {
		d := api.Device{Platform: b.Platform, Token: t}
		if d.Invalid() != "" {
			return nil, fmt.Errorf("%w: malformed device in batch task", errForged)
		}
		b.members[i] = member(d)
	}
	return &b, nil
}
