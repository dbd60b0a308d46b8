package gateway

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/pushgate/pushgate/queue"
)

// Audit list limits of GET /v1/audit.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

// reasonBody is the body of cancel and revoke.
type reasonBody struct {
	Reason string `json:"reason"`
}

// scopeBody is the body of kill and resume.
type scopeBody struct {
	Scope  string `json:"scope"`
	Reason string `json:"reason"`
}

// killResponse answers a kill, and is part of the answer to a revoke. Ack
// is present only when the request waited for the workers.
type killResponse struct {
	Kill    queue.Kill       `json:"kill"`
	Version int64            `json:"version"`
	Waited  bool             `json:"waited"`
	Ack     *queue.AckReport `json:"ack,omitempty"`
}

func newKillResponse(res *queue.KillResult) killResponse {
	out := killResponse{Kill: res.Kill, Version: res.Version, Waited: res.Waited}
	if res.Waited {
		ack := res.Ack
		out.Ack = &ack
	}
	return out
}

// decodeScope reads and checks the body of a kill or a resume.
func decodeScope(body []byte, reasonRequired bool) (scopeBody, error) {
	var b scopeBody
	if err := decodeStrict(body, &b); err != nil {
		return b, err
	}
	if err := queue.ValidateScope(b.Scope); err != nil {
		return b, err
	}
	return b, checkReason(b.Reason, reasonRequired)
}

func (s *Server) kill(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	body, err := decodeScope(a.body, true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	wait := false
	if v := r.URL.Query().Get("wait"); v != "" {
		if wait, err = strconv.ParseBool(v); err != nil {
			s.fail(w, r, &Problem{Code: CodeInvalidQuery, Detail: "wait must be true or false"})
			return
		}
	}
	res, err := s.svc.Kill(r.Context(), a.verified.Key.ID, body.Scope, body.Reason, wait)
	if err != nil {
		s.fail(w, r, fmt.Errorf("kill %s: %w", body.Scope, err))
		return
	}
	s.logger.Warn("kill", "key_id", a.verified.Key.ID, "scope", body.Scope, "version", res.Version,
		"waited", res.Waited, "acknowledged", res.Ack.Acknowledged, "workers", res.Ack.Workers)
	writeJSON(w, http.StatusOK, newKillResponse(res))
}

func (s *Server) listKills(w http.ResponseWriter, r *http.Request) {
	kills, err := s.svc.Kills().Active(r.Context())
	if err != nil {
		s.fail(w, r, fmt.Errorf("list kills: %w", err))
		return
	}
	if kills == nil {
		kills = []queue.Kill{}
	}
	writeJSON(w, http.StatusOK, map[string][]queue.Kill{"kills": kills})
}

// resumeResponse answers POST /v1/resume.
type resumeResponse struct {
	Scope   string `json:"scope"`
	Version int64  `json:"version"`
}

func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	body, err := decodeScope(a.body, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	version, err := s.svc.Resume(r.Context(), a.verified.Key.ID, body.Scope, body.Reason)
	if err != nil {
		s.fail(w, r, fmt.Errorf("resume %s: %w", body.Scope, err))
		return
	}
	s.logger.Warn("resume", "key_id", a.verified.Key.ID, "scope", body.Scope, "version", version)
	writeJSON(w, http.StatusOK, resumeResponse{Scope: body.Scope, Version: version})
}

// revokeResponse answers POST /v1/keys/{id}/revoke: the key is revoked,
// and the kill of everything it submitted is reported.
type revokeResponse struct {
	KeyID   string       `json:"key_id"`
	Revoked bool         `json:"revoked"`
	Kill    killResponse `json:"kill"`
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	id := r.PathValue("id")
	var body reasonBody
	if err := decodeOptional(a.body, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := checkReason(body.Reason, false); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.svc.Revoke(r.Context(), a.verified.Key.ID, id, body.Reason)
	if err != nil {
		s.fail(w, r, fmt.Errorf("revoke key: %w", err))
		return
	}
	s.logger.Warn("key revoked", "key_id", a.verified.Key.ID, "revoked_key_id", id, "version", res.Version)
	writeJSON(w, http.StatusOK, revokeResponse{KeyID: id, Revoked: true, Kill: newKillResponse(res)})
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r.URL.Query().Get("limit"), "limit", defaultAuditLimit, 1, maxAuditLimit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	entries, err := s.svc.Audit().List(r.Context(), int(limit))
	if err != nil {
		s.fail(w, r, fmt.Errorf("list audit: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string][]queue.AuditEntry{"entries": entries})
}
