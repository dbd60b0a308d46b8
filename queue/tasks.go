package queue

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/pushgate/pushgate/providers"
)

// Task types.
const (
	TypePlan          = "pushgate:plan"
	TypeDeliver       = "pushgate:deliver"
	TypeRecallPlan    = "pushgate:recall-plan"
	TypeRecallDeliver = "pushgate:recall-deliver"
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

// batchPayload is one batch of devices of one platform. Everything about
// what to send comes from the broadcast's verified envelope; the payload
// only says to whom, and it is checked against the audience.
type batchPayload struct {
	Broadcast string             `json:"b"`
	Seq       int64              `json:"s"`
	Gen       int                `json:"g"`
	Attempt   int                `json:"a"`
	Platform  providers.Platform `json:"p"`
	Tokens    []string           `json:"t"`
}

func (p *batchPayload) members() []string {
	out := make([]string, len(p.Tokens))
	for i, t := range p.Tokens {
		out[i] = string(p.Platform) + ":" + t
	}
	return out
}

// taskID is the asynq task id of a batch generation: a retried plan or
// batch that enqueues the same generation again collides with it instead of
// enqueuing it twice.
func (p *batchPayload) taskID(kind string) string {
	return kind + ":" + p.Broadcast + ":" + strconv.FormatInt(p.Seq, 10) + ":" + strconv.Itoa(p.Gen)
}

func decodePlan(b []byte) (*planPayload, error) {
	var p planPayload
	if err := json.Unmarshal(b, &p); err != nil || !validID(p.Broadcast) {
		return nil, fmt.Errorf("%w: malformed plan task", errForged)
	}
	return &p, nil
}

func decodeBatch(b []byte) (*batchPayload, error) {
	var p batchPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: malformed batch task", errForged)
	}
	if !validID(p.Broadcast) || p.Seq < 0 || p.Gen < 0 || p.Attempt < 0 || !p.Platform.Valid() ||
		len(p.Tokens) == 0 || len(p.Tokens) > MaxBatch {
		return nil, fmt.Errorf("%w: malformed batch task", errForged)
	}
	for _, t := range p.Tokens {
		if (Device{Platform: p.Platform, Token: t}).problem() != "" {
			return nil, fmt.Errorf("%w: malformed device in batch task", errForged)
		}
	}
	return &p, nil
}

// validID accepts broadcast ids as BroadcastID makes them.
func validID(id string) bool {
	if len(id) < 2 || len(id) > 64 || id[0] != 'b' {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'v') {
			return false
		}
	}
	return true
}

// ValidBroadcastID reports whether id has the shape of a broadcast id.
func ValidBroadcastID(id string) bool { return validID(id) }
