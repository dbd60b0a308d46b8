package gateway

import (
	"fmt"
	"net/http"

	"github.com/pushgate/pushgate/api"
)

func (s *Server) approveBroadcast(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	id := r.PathValue("id")
	noteBroadcast(r, id)
	req, err := api.ParseApprovalRequest(a.body, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.svc.Approve(r.Context(), a.verified, a.envelope, req)
	if err != nil {
		s.fail(w, r, fmt.Errorf("approve broadcast: %w", err))
		return
	}
	s.logger.Warn("broadcast approved", "key_id", a.verified.Key.ID, "broadcast_id", id, "state", st.State,
		"approvals", len(st.Approvals), "required", st.ApprovalsRequired)
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request) {
	list, err := s.svc.Pending(r.Context())
	if err != nil {
		s.fail(w, r, fmt.Errorf("list approvals: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) approveAction(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	id := r.PathValue("id")
	req, err := api.ParseActionApprovalRequest(a.body, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out, err := s.svc.ApproveAction(r.Context(), a.verified, a.envelope, req)
	if err != nil {
		s.fail(w, r, fmt.Errorf("approve action: %w", err))
		return
	}
	s.logger.Warn("action approved", "key_id", a.verified.Key.ID, "action_id", id, "kind", out.Action.Kind,
		"target", out.Action.Target, "done", out.Action.Done)
	writeJSON(w, http.StatusOK, out.Action)
}
