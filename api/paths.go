package api

import "net/url"

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
func RevokePath(keyID string) string { return "/v1/keys/" + url.PathEscape(keyID) + "/revoke" }

// DevicePath is the path of a registered device.
func DevicePath(platform Platform, token string) string {
	return "/v1/devices/" + url.PathEscape(string(platform)) + "/" + url.PathEscape(token)
}

// PathApprovals lists what waits for approvals.
const PathApprovals = "/v1/approvals"

// ApprovalsPath is the path that approves a broadcast.
func ApprovalsPath(id string) string { return BroadcastPath(id) + "/approvals" }

// ActionApprovalsPath is the path that approves an admin action.
func ActionApprovalsPath(id string) string { return "/v1/actions/" + url.PathEscape(id) + "/approvals" }
