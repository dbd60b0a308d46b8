package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/pushgate/pushgate/api"
)

// writeProblem answers with p.
func writeProblem(w http.ResponseWriter, p *api.Problem) {
	b, err := json.Marshal(p)
	if err != nil {
		// A Problem is strings and an int; this cannot fail.
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", api.ProblemContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(b, '\n'))
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, api.NewProblem(api.CodeInternal, ""))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
