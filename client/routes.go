package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/pushgate/pushgate/api"
)

// Submission is the answer to a broadcast submission.
type Submission struct {
	api.SubmitResponse
	// Created is false when the gateway returned an earlier broadcast
	// submitted with the same idempotency key and body (200, not 202).
	Created bool
}

// Submit submits a broadcast.
func (c *Client) Submit(ctx context.Context, req *api.BroadcastRequest) (*Submission, error) {
	var sub Submission
	status, err := c.Do(ctx, http.MethodPost, api.PathBroadcasts, nil, req, &sub.SubmitResponse)
	if err != nil {
		return nil, err
	}
	sub.Created = status == http.StatusAccepted
	return &sub, nil
}

// Status reads a broadcast's state, counters and timeline.
func (c *Client) Status(ctx context.Context, id string) (*api.Status, error) {
	var st api.Status
	if _, err := c.Do(ctx, http.MethodGet, api.BroadcastPath(id), nil, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// ListOptions select a page of broadcasts; the zero value is the newest
// page of every state.
type ListOptions struct {
	State string // only broadcasts in this state; "" for all
	Limit int    // broadcasts per page; 0 for the gateway's default
	After string // the Next cursor of the previous page; "" for the first
}

// List returns a page of broadcasts, newest first.
func (c *Client) List(ctx context.Context, o ListOptions) (*api.ListPage, error) {
	q := url.Values{}
	if o.State != "" {
		q.Set("state", o.State)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.After != "" {
		q.Set("after", o.After)
	}
	var page api.ListPage
	if _, err := c.Do(ctx, http.MethodGet, api.PathBroadcasts, q, nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// Cancel stops the rest of a broadcast's fan-out; only its sender key or
// an admin may.
func (c *Client) Cancel(ctx context.Context, id, reason string) (*api.Status, error) {
	var st api.Status
	if _, err := c.Do(ctx, http.MethodPost, api.CancelPath(id), nil, api.ReasonRequest{Reason: reason}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Recall kills a broadcast and replaces or removes it on the phones it
// reached (admin). A replacement with custom text, rather than the
// gateway's standard retraction, waits for a second person: Recall then
// returns the pending action instead of the broadcast.
func (c *Client) Recall(ctx context.Context, id string, req *api.RecallRequest) (*api.Status, *api.PendingAction, error) {
	var st api.Status
	pending, err := c.doOrPending(ctx, api.RecallPath(id), req, &st)
	if err != nil || pending != nil {
		return nil, pending, err
	}
	return &st, nil, nil
}

// doOrPending posts in to path and decodes the answer into out, or, when
// the gateway answered with an action awaiting approval, returns that.
func (c *Client) doOrPending(ctx context.Context, path string, in, out any) (*api.PendingAction, error) {
	var raw json.RawMessage
	status, err := c.Do(ctx, http.MethodPost, path, nil, in, &raw)
	if err != nil {
		return nil, err
	}
	if status == http.StatusAccepted {
		var probe struct {
			RequestSHA256 string `json:"request_sha256"`
		}
		if json.Unmarshal(raw, &probe) == nil && probe.RequestSHA256 != "" {
			var p api.PendingAction
			if err := json.Unmarshal(raw, &p); err != nil {
				return nil, fmt.Errorf("POST %s: decode answer: %w", path, err)
			}
			return &p, nil
		}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("POST %s: decode answer: %w", path, err)
	}
	return nil, nil
}

// Wait polls a broadcast's status every poll until it has ended (for a
// recalled broadcast: until its recall is done), calling progress, when
// not nil, with every status read. A gateway answering "unavailable" (its
// Redis blinked) is read again at the next poll. It returns the last
// status; ended is not success: look at its State and Counters.
func (c *Client) Wait(ctx context.Context, id string, poll time.Duration, progress func(*api.Status)) (*api.Status, error) {
	if poll <= 0 {
		return nil, fmt.Errorf("client: poll interval must be positive, got %v", poll)
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		st, err := c.Status(ctx, id)
		switch {
		case IsProblem(err, api.CodeUnavailable):
		case err != nil:
			return nil, err
		default:
			if progress != nil {
				progress(st)
			}
			if st.Finished() {
				return st, nil
			}
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-t.C:
		}
	}
}

// Kill stops a scope (global, key:ID, broadcast:ID, topic:NAME) on every
// worker (admin). With wait the answer comes once every live worker has
// acknowledged it, or the gateway's wait bound passed (the answer says).
func (c *Client) Kill(ctx context.Context, scope, reason string, wait bool) (*api.KillResponse, error) {
	var q url.Values
	if wait {
		q = url.Values{"wait": {"true"}}
	}
	var k api.KillResponse
	if _, err := c.Do(ctx, http.MethodPost, api.PathKill, q, api.ScopeRequest{Scope: scope, Reason: reason}, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// Kills lists the active kills (admin).
func (c *Client) Kills(ctx context.Context) ([]api.Kill, error) {
	var l api.KillList
	if _, err := c.Do(ctx, http.MethodGet, api.PathKill, nil, nil, &l); err != nil {
		return nil, err
	}
	return l.Kills, nil
}

// Resume lifts a topic kill (admin). Lifting a global or key kill waits
// for a second person: Resume then returns the pending action.
func (c *Client) Resume(ctx context.Context, scope, reason string) (*api.ResumeResponse, *api.PendingAction, error) {
	var r api.ResumeResponse
	pending, err := c.doOrPending(ctx, api.PathResume, api.ScopeRequest{Scope: scope, Reason: reason}, &r)
	if err != nil || pending != nil {
		return nil, pending, err
	}
	return &r, nil, nil
}

// Revoke revokes a key and kills everything it submitted (admin).
// Revoking another admin key waits for a second person: Revoke then
// returns the pending action.
func (c *Client) Revoke(ctx context.Context, keyID, reason string) (*api.RevokeResponse, *api.PendingAction, error) {
	var r api.RevokeResponse
	pending, err := c.doOrPending(ctx, api.RevokePath(keyID), api.ReasonRequest{Reason: reason}, &r)
	if err != nil || pending != nil {
		return nil, pending, err
	}
	return &r, nil, nil
}

// Keys lists the gateway's keyring, each key with its roles, topics,
// limits, public key fingerprint and revocation (admin).
func (c *Client) Keys(ctx context.Context) (*api.KeyList, error) {
	var l api.KeyList
	if _, err := c.Do(ctx, http.MethodGet, api.PathKeys, nil, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Approvals lists the broadcasts and admin actions that wait for
// approvals (approve or admin).
func (c *Client) Approvals(ctx context.Context) (*api.ApprovalsList, error) {
	var l api.ApprovalsList
	if _, err := c.Do(ctx, http.MethodGet, api.PathApprovals, nil, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Approve co-signs a broadcast awaiting approval (approve). digest is
// api.Digest of the body the approver was shown (PendingBroadcast.Body):
// the approval counts only for exactly that content.
func (c *Client) Approve(ctx context.Context, id, digest string) (*api.Status, error) {
	var st api.Status
	req := api.ApprovalRequest{BroadcastID: id, EnvelopeSHA256: digest}
	if _, err := c.Do(ctx, http.MethodPost, api.ApprovalsPath(id), nil, req, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// ApproveAction co-signs an admin action awaiting approval (admin or
// approve); digest is api.Digest of PendingAction.Body. The approval that
// completes the action carries it out.
func (c *Client) ApproveAction(ctx context.Context, id, digest string) (*api.PendingAction, error) {
	var p api.PendingAction
	req := api.ActionApprovalRequest{ActionID: id, RequestSHA256: digest}
	if _, err := c.Do(ctx, http.MethodPost, api.ActionApprovalsPath(id), nil, req, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Audit returns up to limit entries of the control log, newest first,
// with their inclusion proofs and the checkpoint they prove into (admin);
// 0 is the gateway's default. controllog.CheckInclusion checks an entry
// with the log's public key.
func (c *Client) Audit(ctx context.Context, limit int) (*api.AuditPage, error) {
	var q url.Values
	if limit > 0 {
		q = url.Values{"limit": {strconv.Itoa(limit)}}
	}
	var page api.AuditPage
	if _, err := c.Do(ctx, http.MethodGet, api.PathAudit, q, nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// PutDevice registers a device with exactly the given topics (register).
func (c *Client) PutDevice(ctx context.Context, d api.Device, topics []string) (*api.DeviceResponse, error) {
	if topics == nil {
		topics = []string{}
	}
	var r api.DeviceResponse
	if _, err := c.Do(ctx, http.MethodPut, api.DevicePath(d.Platform, d.Token), nil, api.DeviceRequest{Topics: topics}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// DeleteDevice removes a device from the registry (register).
func (c *Client) DeleteDevice(ctx context.Context, d api.Device) error {
	_, err := c.Do(ctx, http.MethodDelete, api.DevicePath(d.Platform, d.Token), nil, nil, nil)
	return err
}

// ImportDevices registers up to api.MaxTokens devices in one request
// (register).
func (c *Client) ImportDevices(ctx context.Context, devices []api.ImportDevice) (*api.ImportResponse, error) {
	var r api.ImportResponse
	if _, err := c.Do(ctx, http.MethodPost, api.PathDevicesImport, nil, api.ImportRequest{Devices: devices}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
