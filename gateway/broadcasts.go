package gateway

import (
	"fmt"
	"net/http"
	"time"

	"github.com/pushgate/pushgate/queue"
)

// List limits of GET /v1/broadcasts.
const (
	defaultListLimit = 50
	maxListLimit     = 500
)

// stateNames lists the broadcast states GET /v1/broadcasts may filter by
// (DESIGN.md, "HTTP API"), for its error message.
const stateNames = "awaiting_approval, queued, sending, completed, cancelled, killed, recalling, recalled"

// knownState reports whether s is a broadcast state. awaiting_approval
// belongs to approvals, which come later; filtering by it finds nothing
// until then.
func knownState(s string) bool {
	switch s {
	case "awaiting_approval", queue.StateQueued, queue.StateSending, queue.StateCompleted,
		queue.StateCancelled, queue.StateKilled, queue.StateRecalling, queue.StateRecalled:
		return true
	}
	return false
}

// submitResponse answers POST /v1/broadcasts.
type submitResponse struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	StatusURL string `json:"status_url"`
}

// statusPath is the path of a broadcast's status.
func statusPath(id string) string { return "/v1/broadcasts/" + id }

// noteBroadcast adds a broadcast id to the request log, when it has the
// form of one: the path is the caller's text, and only ids are logged.
func noteBroadcast(r *http.Request, id string) {
	if queue.ValidBroadcastID(id) {
		infoFrom(r.Context()).broadcastID = id
	}
}

// parseBroadcast decodes and validates a broadcast body completely, so
// that nothing the Service is handed can be refused for its form. The
// fuzz test drives it directly.
func parseBroadcast(body []byte, maxTTL time.Duration) (*queue.BroadcastRequest, error) {
	return queue.ParseBroadcastRequest(body, maxTTL)
}

func (s *Server) submitBroadcast(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	req, err := parseBroadcast(a.body, s.maxTTL)
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
	w.Header().Set("Location", statusPath(id))
	writeJSON(w, status, submitResponse{ID: id, State: sub.Status.State, StatusURL: statusPath(id)})
}

func (s *Server) getBroadcast(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, err := s.svc.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, fmt.Errorf("get broadcast: %w", err))
		return
	}
	noteBroadcast(r, st.ID)
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) listBroadcasts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	if state != "" && !knownState(state) {
		s.fail(w, r, &Problem{Code: CodeInvalidQuery, Detail: "state must be one of " + stateNames})
		return
	}
	limit, err := intParam(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page, err := s.svc.List(r.Context(), state, int(limit), q.Get("after"))
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
	var body reasonBody
	if err := decodeOptional(a.body, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := checkReason(body.Reason, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if _, err := s.svc.Cancel(r.Context(), a.verified.Key, id, body.Reason); err != nil {
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
	req, err := queue.ParseRecallRequest(a.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.svc.Recall(r.Context(), a.verified.Key.ID, id, a.envelope, req)
	if err != nil {
		s.fail(w, r, fmt.Errorf("recall broadcast: %w", err))
		return
	}
	// The recall is planned and sent by workers after this answer.
	writeJSON(w, http.StatusAccepted, st)
}

func (s *Server) approveBroadcast(w http.ResponseWriter, r *http.Request) {
	noteBroadcast(r, r.PathValue("id"))
	s.fail(w, r, &Problem{Code: CodeNotImplemented,
		Detail: "approvals are a later feature: no broadcast needs approval yet, so there is nothing to co-sign"})
}
