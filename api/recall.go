package api

import "time"

// Recall modes.
const (
	RecallReplace = "replace"
	RecallRemove  = "remove"
)

// RecallRequest is the body of POST /v1/broadcasts/{id}/recall.
type RecallRequest struct {
	Mode        string       `json:"mode"`
	Replacement *MessageSpec `json:"replacement,omitempty"`
}

// ParseRecallRequest decodes and validates a recall body.
func ParseRecallRequest(body []byte) (*RecallRequest, error) {
	var r RecallRequest
	if err := DecodeJSON(body, &r); err != nil {
		return nil, err
	}
	switch r.Mode {
	case RecallReplace:
		if r.Replacement == nil {
			return nil, Errorf(CodeInvalidRecall, "mode replace needs a replacement with a title or a body")
		}
		if r.Replacement.TTL != "" {
			return nil, Errorf(CodeInvalidRecall, "a replacement keeps the original's ttl; remove replacement.ttl")
		}
		// The TTL bound does not matter: a replacement has no TTL.
		if err := r.Replacement.validate(time.Hour); err != nil {
			return nil, err
		}
	case RecallRemove:
		if r.Replacement != nil {
			return nil, Errorf(CodeInvalidRecall, "mode remove takes no replacement")
		}
	default:
		return nil, Errorf(CodeInvalidRecall, "mode must be replace or remove")
	}
	return &r, nil
}
