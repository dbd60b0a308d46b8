package gateway_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
)

// TestApprovalRoutes walks a broadcast over its key's approval threshold
// through the API: it waits, approvers see it with its body, the wrong
// keys are refused, and the second owner's approval queues it.
func TestApprovalRoutes(t *testing.T) {
	env := gatewaytest.Start(t)
	register(t, env, "citizens", 5)
	id := submit(t, env, gatewaytest.Gated, broadcastBody(`{"topic":"citizens"}`))

	var st api.Status
	call(t, env, gatewaytest.Gated, "GET", api.BroadcastPath(id), "").decode(t, &st)
	if st.State != api.StateAwaitingApproval || st.ApprovalsRequired != 2 {
		t.Fatalf("status = %+v, want awaiting 2 approvals", st)
	}
	if r := call(t, env, gatewaytest.Sender, "GET", api.PathApprovals, ""); r.status != http.StatusForbidden {
		t.Errorf("a broadcast key lists approvals: %d", r.status)
	}
	var list api.ApprovalsList
	call(t, env, gatewaytest.Approver, "GET", api.PathApprovals, "").decode(t, &list)
	if len(list.Broadcasts) != 1 || list.Broadcasts[0].ID != id || list.Broadcasts[0].EnvelopeSHA256 != api.Digest(list.Broadcasts[0].Body) {
		t.Fatalf("pending = %+v, want the broadcast with its body and digest", list)
	}
	approval := fmt.Sprintf(`{"broadcast_id":%q,"envelope_sha256":%q}`, id, list.Broadcasts[0].EnvelopeSHA256)
	tests := []struct {
		name, key, path, body string
		want                  int
		code                  string
	}{
		{"an admin is not an approver", gatewaytest.Admin, api.ApprovalsPath(id), approval, 403, "forbidden"},
		{"body names another broadcast", gatewaytest.Approver, api.ApprovalsPath("b0000"), approval, 409, "approval_mismatch"},
		{"another digest", gatewaytest.Approver, api.ApprovalsPath(id),
			fmt.Sprintf(`{"broadcast_id":%q,"envelope_sha256":"%064x"}`, id, 1), 409, "approval_mismatch"},
		{"malformed digest", gatewaytest.Approver, api.ApprovalsPath(id), fmt.Sprintf(`{"broadcast_id":%q,"envelope_sha256":"x"}`, id), 400, "malformed_json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, env, tt.key, "POST", tt.path, tt.body)
			if r.status != tt.want || r.problem(t).Code != tt.code {
				t.Errorf("%d %s, want %d %s", r.status, r.body, tt.want, tt.code)
			}
		})
	}
	call(t, env, gatewaytest.Approver, "POST", api.ApprovalsPath(id), approval).decode(t, &st)
	if st.State != api.StateAwaitingApproval || len(st.Approvals) != 1 || st.Approvals[0].Owner != "gov-a" {
		t.Fatalf("after one approval: %+v", st)
	}
	if r := call(t, env, gatewaytest.Approver, "POST", api.ApprovalsPath(id), approval); r.status != 409 || r.problem(t).Code != "duplicate_approval" {
		t.Errorf("the same approver again: %d %s", r.status, r.body)
	}
	call(t, env, gatewaytest.Approver2, "POST", api.ApprovalsPath(id), approval).decode(t, &st)
	if st.State != api.StateQueued || len(st.Approvals) != 2 {
		t.Fatalf("after two approvals: %+v", st)
	}
	if n := queuedTasks(t, env, "pushgate-plan"); n != 2 { // its plan task, and the expiry that will find it queued
		t.Errorf("plan queue holds %d tasks, want the plan and the expiry check", n)
	}
}

// TestActionApprovalRoutes lifts a global kill through the two-person
// rule.
func TestActionApprovalRoutes(t *testing.T) {
	env := gatewaytest.Start(t)
	if r := call(t, env, gatewaytest.Admin, "POST", api.PathKill, `{"scope":"global","reason":"drill"}`); r.status != 200 {
		t.Fatalf("kill: %d %s", r.status, r.body)
	}
	r := call(t, env, gatewaytest.Admin, "POST", api.PathResume, `{"scope":"global","reason":"over"}`)
	var p api.PendingAction
	r.decode(t, &p)
	if r.status != http.StatusAccepted || p.Kind != api.ActionResume || p.Target != "global" {
		t.Fatalf("resume global: %d %s, want 202 and a pending action", r.status, r.body)
	}
	approval := fmt.Sprintf(`{"action_id":%q,"request_sha256":%q}`, p.ID, p.RequestSHA256)
	if r := call(t, env, gatewaytest.Admin, "POST", api.ActionApprovalsPath(p.ID), approval); r.status != 403 || r.problem(t).Code != "self_approval" {
		t.Errorf("self approval: %d %s", r.status, r.body)
	}
	if r := call(t, env, gatewaytest.Sender, "POST", api.ActionApprovalsPath(p.ID), approval); r.status != 403 || r.problem(t).Code != "forbidden" {
		t.Errorf("a broadcast key approving: %d %s", r.status, r.body)
	}
	call(t, env, gatewaytest.Admin2, "POST", api.ActionApprovalsPath(p.ID), approval).decode(t, &p)
	if !p.Done || len(p.Approvals) != 1 {
		t.Fatalf("after the second admin's approval: %+v", p)
	}
	var kills api.KillList
	call(t, env, gatewaytest.Admin, "GET", api.PathKill, "").decode(t, &kills)
	if len(kills.Kills) != 0 {
		t.Errorf("kills after the approved resume: %+v", kills.Kills)
	}
}

// TestRegisterKeyScopeRoutes checks a register key scoped to district-9*.
func TestRegisterKeyScopeRoutes(t *testing.T) {
	env := gatewaytest.Start(t)
	if r := call(t, env, gatewaytest.Registrar9, "PUT", api.DevicePath(api.FCM, "t1"), `{"topics":["citizens"]}`); r.status != 403 || r.problem(t).Code != "topic_not_allowed" {
		t.Errorf("into another topic: %d %s", r.status, r.body)
	}
	if r := call(t, env, gatewaytest.Registrar, "PUT", api.DevicePath(api.FCM, "t1"), `{"topics":["citizens"]}`); r.status != 200 {
		t.Fatalf("registrar: %d %s", r.status, r.body)
	}
	if r := call(t, env, gatewaytest.Registrar9, "DELETE", api.DevicePath(api.FCM, "t1"), ""); r.status != 404 {
		t.Errorf("delete of a device in another owner's topic: %d %s", r.status, r.body)
	}
	var body string
	for i := range 6 {
		if i > 0 {
			body += ","
		}
		body += fmt.Sprintf(`{"platform":"fcm","token":"q%d","topics":["district-9a"]}`, i)
	}
	if r := call(t, env, gatewaytest.Registrar9, "POST", api.PathDevicesImport, `{"devices":[`+body+`]}`); r.status != 403 || r.problem(t).Code != "device_quota_exceeded" {
		t.Errorf("import over the quota of 5: %d %s", r.status, r.body)
	}
}
