package gateway

import (
	"fmt"
	"net/http"

	"github.com/pushgate/pushgate/api"
)

// noteBroadcast adds a broadcast id to the request log, when it has the
// form of one: the path is the caller's text, and only ids are logged.
func noteBroadcast(r *http.Request, id string) {
	if api.ValidBroadcastID(id) {
		infoFrom(r.Context()).broadcastID = id
	}
}

func (s *Server) submitBroadcast(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	req, err := api.ParseBroadcastRequest(a.body, s.maxTTL)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sub, err := s.svc.Submit(r.Context(), a.verified, a.envelope, req)
	if err != nil {
		s.fail(w, r, fmt.Errorf("submit broadcast: %w", err))
		return
	}
	id := sub.Status.ID
	noteBroadcast(r, id)
	status := http.StatusOK // an idempotent repeat
	if sub.Created {
		status = http.StatusAccepted
	}
	w.Header().Set("Location", api.BroadcastPath(id))
	writeJSON(w, status, api.SubmitResponse{ID: id, State: sub.Status.State, StatusURL: api.BroadcastPath(id)})
}

// getBroadcast answers a broadcast's status to a key that may read it
// (queue.SeesAll, or the key that submitted it); to any other, the
// broadcast does not exist.
func (s *Server) getBroadcast(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	id := r.PathValue("id")
	if err := s.svc.Visible(r.Context(), a.verified.Key, id); err != nil {
		s.fail(w, r, fmt.Errorf("get broadcast: %w", err))
		return
	}
	st, err := s.svc.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, fmt.Errorf("get broadcast: %w", err))
		return
	}
	noteBroadcast(r, st.ID)
	writeJSON(w, http.StatusOK, st)
}

// listBroadcasts lists the broadcasts the caller may read: every sender's
// for an admin or approver, its own for any other key.
func (s *Server) listBroadcasts(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	q := r.URL.Query()
	state := q.Get("state")
	limit, err := intParam(q.Get("limit"), "limit", api.DefaultListLimit, 1, api.MaxListLimit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page, err := s.svc.ListFor(r.Context(), a.verified.Key, state, int(limit), q.Get("after"))
	if err != nil {
		s.fail(w, r, fmt.Errorf("list broadcasts: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) cancelBroadcast(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	id := r.PathValue("id")
	noteBroadcast(r, id)
	body, err := api.ParseReasonRequest(a.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// A key that may not read the broadcast learns no more from a cancel
	// than from a read: not found.
	if err := s.svc.Visible(r.Context(), a.verified.Key, id); err != nil {
		s.fail(w, r, fmt.Errorf("cancel broadcast: %w", err))
		return
	}
	if _, err := s.svc.Cancel(r.Context(), a.verified, a.envelope, id, body.Reason); err != nil {
		s.fail(w, r, fmt.Errorf("cancel broadcast: %w", err))
		return
	}
	st, err := s.svc.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, fmt.Errorf("get broadcast: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) recallBroadcast(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	id := r.PathValue("id")
	noteBroadcast(r, id)
	req, err := api.ParseRecallRequest(a.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, pending, err := s.svc.Recall(r.Context(), a.verified, id, a.envelope, req)
	if err != nil {
		s.fail(w, r, fmt.Errorf("recall broadcast: %w", err))
		return
	}
	if pending != nil {
		s.logger.Warn("recall with custom text awaits approval", "key_id", a.verified.Key.ID, "action_id", pending.ID)
		writeJSON(w, http.StatusAccepted, pending)
		return
	}
	// The recall is planned and sent by workers after this answer.
	writeJSON(w, http.StatusAccepted, st)
}
