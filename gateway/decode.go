package gateway

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pushgate/pushgate/queue"
)

// maxReasonBytes bounds a kill, resume, revoke or cancel reason, which is
// stored in the kill state and the audit log.
const maxReasonBytes = 1024

// decodeStrict decodes exactly one JSON value into v with the queue's
// decoder, so every body the API reads is refused alike.
func decodeStrict(body []byte, v any) error { return queue.DecodeJSON(body, v) }

// decodeOptional is decodeStrict for bodies that may be left out.
func decodeOptional(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return decodeStrict(body, v)
}

// checkReason validates a reason; required reasons must not be blank.
func checkReason(reason string, required bool) error {
	switch {
	case required && strings.TrimSpace(reason) == "":
		return &Problem{Code: CodeInvalidReason, Detail: "reason is required: say why, for the audit log"}
	case len(reason) > maxReasonBytes:
		return &Problem{Code: CodeInvalidReason, Detail: fmt.Sprintf("reason is over %d bytes", maxReasonBytes)}
	case !utf8.ValidString(reason):
		return &Problem{Code: CodeInvalidReason, Detail: "reason must be UTF-8"}
	}
	return nil
}

// intParam parses an optional integer query parameter within [lo, hi].
func intParam(v, name string, def, lo, hi int64) (int64, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, &Problem{Code: CodeInvalidQuery, Detail: fmt.Sprintf("%s must be an integer from %d to %d", name, lo, hi)}
	}
	return n, nil
}
