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
	PathDevicesImport = "/v1/devices/import"
	PathHealthz       = "/healthz"
	PathReadyz        = "/readyz"
	PathMetrics       = "/metrics"
)

// BroadcastPath is the path of a broadcast's status.
func BroadcastPath(id string) string { return PathBroadcasts + "/" + url.PathEscape(id) }

// CancelPath is the path that cancels a broadcast.
func CancelPath(id string) string { return BroadcastPath(id) + "/cancel" }

// RecallPath is the path that recalls a broadcast.
func RecallPath(id string) string { return BroadcastPath(id) + "/recall" }

// RevokePath is the path that revokes a key.
func RevokePath(keyID string) string { return pathKeys + url.PathEscape(keyID) + "/revoke" }

const (
	pathKeys    = "/v1/keys/"
	pathActions = "/v1/actions/"
)

// RevokeTarget returns the key a revoke path names; ok is false for any
// other path, or one that does not spell the id as RevokePath does.
func RevokeTarget(path string) (keyID string, ok bool) { return pathTarget(path, pathKeys, RevokePath) }

// ActionApprovalsTarget returns the action an action-approval path names,
// as RevokeTarget does.
func ActionApprovalsTarget(path string) (actionID string, ok bool) {
	return pathTarget(path, pathActions, ActionApprovalsPath)
}

// pathTarget reads the escaped id after prefix, and accepts it only if
// build spells the same path from it.
func pathTarget(path, prefix string, build func(string) string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok {
		return "", false
	}
	esc, _, _ := strings.Cut(rest, "/")
	id, err := url.PathUnescape(esc)
	if err != nil || id == "" || build(id) != path {
		return "", false
	}
	return id, true
}

// DevicePath is the path of a registered device.
func DevicePath(platform Platform, token string) string {
	return "/v1/devices/" + url.PathEscape(string(platform)) + "/" + url.PathEscape(token)
}

// PathApprovals lists what waits for approvals.
const PathApprovals = "/v1/approvals"

// ApprovalsPath is the path that approves a broadcast.
func ApprovalsPath(id string) string { return BroadcastPath(id) + "/approvals" }

// ActionApprovalsPath is the path that approves an admin action.
func ActionApprovalsPath(id string) string { return pathActions + url.PathEscape(id) + "/approvals" }
