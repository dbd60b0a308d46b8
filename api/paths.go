package api

import (
	"net/url"
	"strings"
)

// Paths of the v1 routes. Ids and tokens are escaped by the builders; the
// gateway's route patterns are written out in gateway/server.go.
const (
	PathBroadcasts    = "/v1/broadcasts"
	PathKill          = "/v1/kill"
	PathResume        = "/v1/resume"
	PathAudit         = "/v1/audit"
	PathKeys          = "/v1/keys"
	PathDevicesImport = "/v1/devices/import"
	PathHealthz       = "/healthz"
	PathReadyz        = "/readyz"
	PathMetrics       = "/metrics"
)

// Patterns of the v1 routes whose paths name something, as the gateway
// registers them: every builder below is ExpandPath of one of them, so the
// paths the gateway accepts (CanonicalPath) are exactly the paths the
// workers and the control log expect (docs/ARCHITECTURE.md, "Canonical
// request paths").
const (
	PatternBroadcast       = "/v1/broadcasts/{id}"
	PatternCancel          = "/v1/broadcasts/{id}/cancel"
	PatternRecall          = "/v1/broadcasts/{id}/recall"
	PatternApprovals       = "/v1/broadcasts/{id}/approvals"
	PatternActionApprovals = "/v1/actions/{id}/approvals"
	PatternRevoke          = "/v1/keys/{id}/revoke"
	PatternDevice          = "/v1/devices/{platform}/{token}"
)

// ExpandPath spells a route pattern's path with values for its wildcards,
// in order, each escaped as one path segment (url.PathEscape). It is the
// one spelling of a route's path that the API accepts and the workers
// expect. Missing values are left empty.
func ExpandPath(pattern string, values ...string) string {
	segs := strings.Split(pattern, "/")
	n := 0
	for i, s := range segs {
		if isWildcard(s) {
			v := ""
			if n < len(values) {
				v = values[n]
			}
			n++
			segs[i] = url.PathEscape(v)
		}
	}
	return strings.Join(segs, "/")
}

// CanonicalPath reports whether escaped, a request path as received and
// as a signature's @path covers it, is exactly ExpandPath of pattern for
// some non-empty values, and returns them. It refuses any other spelling
// of the same route: percent-encoding where ExpandPath has none (or
// lowercase hex), empty or dot segments, a trailing slash. (An id of "."
// or ".." has no canonical path: ServeMux would resolve it.)
func CanonicalPath(pattern, escaped string) (values []string, ok bool) {
	if !CleanPath(escaped) {
		return nil, false
	}
	want := strings.Split(pattern, "/")
	got := strings.Split(escaped, "/")
	if len(want) != len(got) {
		return nil, false
	}
	for i, w := range want {
		if !isWildcard(w) {
			continue
		}
		v, err := url.PathUnescape(got[i])
		if err != nil || v == "" {
			return nil, false
		}
		values = append(values, v)
	}
	if ExpandPath(pattern, values...) != escaped {
		return nil, false
	}
	return values, true
}

// CleanPath reports whether an escaped path has no empty or dot segments
// and no trailing slash: the shape of every path the API serves.
func CleanPath(escaped string) bool {
	if !strings.HasPrefix(escaped, "/") {
		return false
	}
	if escaped == "/" {
		return true
	}
	for _, s := range strings.Split(escaped[1:], "/") {
		switch s {
		case "", ".", "..", "%2e", "%2E", "%2e%2e", "%2E%2E", ".%2e", ".%2E", "%2e.", "%2E.":
			return false
		}
	}
	return true
}

func isWildcard(seg string) bool {
	return len(seg) > 2 && seg[0] == '{' && seg[len(seg)-1] == '}'
}

// BroadcastPath is the path of a broadcast's status.
func BroadcastPath(id string) string { return ExpandPath(PatternBroadcast, id) }

// CancelPath is the path that cancels a broadcast.
func CancelPath(id string) string { return ExpandPath(PatternCancel, id) }

// RecallPath is the path that recalls a broadcast.
func RecallPath(id string) string { return ExpandPath(PatternRecall, id) }

// RevokePath is the path that revokes a key.
func RevokePath(keyID string) string { return ExpandPath(PatternRevoke, keyID) }

// RevokeTarget returns the key a revoke path names; ok is false for any
// other path, or one that does not spell the id as RevokePath does.
func RevokeTarget(path string) (keyID string, ok bool) { return pathTarget(path, PatternRevoke) }

// ActionApprovalsTarget returns the action an action-approval path names,
// as RevokeTarget does.
func ActionApprovalsTarget(path string) (actionID string, ok bool) {
	return pathTarget(path, PatternActionApprovals)
}

// pathTarget returns the one value a canonical path of pattern names.
func pathTarget(path, pattern string) (string, bool) {
	v, ok := CanonicalPath(pattern, path)
	if !ok || len(v) != 1 {
		return "", false
	}
	return v[0], true
}

// DevicePath is the path of a registered device.
func DevicePath(platform Platform, token string) string {
	return ExpandPath(PatternDevice, string(platform), token)
}

// PathApprovals lists what waits for approvals.
const PathApprovals = "/v1/approvals"

// ApprovalsPath is the path that approves a broadcast.
func ApprovalsPath(id string) string { return ExpandPath(PatternApprovals, id) }

// ActionApprovalsPath is the path that approves an admin action.
func ActionApprovalsPath(id string) string { return ExpandPath(PatternActionApprovals, id) }
