package gateway

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/queue"
)

func newKillResponse(res *queue.KillResult) api.KillResponse {
	out := api.KillResponse{Kill: res.Kill, Version: res.Version, Waited: res.Waited}
	if res.Waited {
		ack := res.Ack
		out.Ack = &ack
	}
	return out
}

func (s *Server) kill(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	body, err := api.ParseKillRequest(a.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	wait := false
	if v := r.URL.Query().Get("wait"); v != "" {
		if wait, err = strconv.ParseBool(v); err != nil {
			s.fail(w, r, api.Errorf(api.CodeInvalidQuery, "wait must be true or false"))
			return
		}
	}
	res, err := s.svc.Kill(r.Context(), a.verified, a.envelope, body.Scope, body.Reason, wait)
	if err != nil {
		s.fail(w, r, fmt.Errorf("kill %s: %w", body.Scope, err))
		return
	}
	s.logger.Warn("kill", "key_id", a.verified.Key.ID, "scope", body.Scope, "version", res.Version,
		"waited", res.Waited, "acknowledged", res.Ack.Acknowledged, "workers", res.Ack.Workers)
	writeJSON(w, http.StatusOK, newKillResponse(res))
}

func (s *Server) listKills(w http.ResponseWriter, r *http.Request) {
	kills := s.svc.ActiveKills()
	if kills == nil {
		kills = []api.Kill{}
	}
	writeJSON(w, http.StatusOK, api.KillList{Kills: kills})
}

func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	body, err := api.ParseResumeRequest(a.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	version, pending, err := s.svc.Resume(r.Context(), a.verified, a.envelope, body.Scope, body.Reason)
	if err != nil {
		s.fail(w, r, fmt.Errorf("resume %s: %w", body.Scope, err))
		return
	}
	if pending != nil {
		s.logger.Warn("resume awaits approval", "key_id", a.verified.Key.ID, "scope", body.Scope, "action_id", pending.ID)
		writeJSON(w, http.StatusAccepted, pending)
		return
	}
	s.logger.Warn("resume", "key_id", a.verified.Key.ID, "scope", body.Scope, "version", version)
	writeJSON(w, http.StatusOK, api.ResumeResponse{Scope: body.Scope, Version: version})
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	id := r.PathValue("id")
	body, err := api.ParseReasonRequest(a.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, pending, err := s.svc.Revoke(r.Context(), a.verified, a.envelope, id, body.Reason)
	if err != nil {
		s.fail(w, r, fmt.Errorf("revoke key: %w", err))
		return
	}
	if pending != nil {
		s.logger.Warn("revocation of an admin key awaits approval", "key_id", a.verified.Key.ID, "revoked_key_id", id, "action_id", pending.ID)
		writeJSON(w, http.StatusAccepted, pending)
		return
	}
	s.logger.Warn("key revoked", "key_id", a.verified.Key.ID, "revoked_key_id", id, "version", res.Version)
	writeJSON(w, http.StatusOK, api.RevokeResponse{KeyID: id, Revoked: true, Kill: newKillResponse(res)})
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r.URL.Query().Get("limit"), "limit", api.DefaultAuditLimit, 1, api.MaxAuditLimit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page, err := s.svc.AuditLog(r.Context(), int(limit))
	if err != nil {
		s.fail(w, r, fmt.Errorf("list audit: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// intParam parses an optional integer query parameter within [lo, hi].
func intParam(v, name string, def, lo, hi int64) (int64, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, api.Errorf(api.CodeInvalidQuery, "%s must be an integer from %d to %d", name, lo, hi)
	}
	return n, nil
}
