package gateway

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/pushgate/pushgate/queue"
)

// deviceResponse answers PUT /v1/devices/{platform}/{token}. It leaves
// the token out: the caller knows it, and answers end up in logs.
type deviceResponse struct {
	Platform string   `json:"platform"`
	Topics   []string `json:"topics"`
}

// pathDevice reads and validates the device named by the path.
func pathDevice(r *http.Request) (queue.Device, error) {
	return queue.NewDevice(r.PathValue("platform"), r.PathValue("token"))
}

func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	d, err := pathDevice(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req, err := queue.ParseDeviceRequest(a.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	topics := slices.Compact(slices.Sorted(slices.Values(req.Topics)))
	if err := s.svc.Registry().Put(r.Context(), d, topics); err != nil {
		s.fail(w, r, fmt.Errorf("register device: %w", err))
		return
	}
	if topics == nil {
		topics = []string{}
	}
	writeJSON(w, http.StatusOK, deviceResponse{Platform: string(d.Platform), Topics: topics})
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) {
	d, err := pathDevice(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	n, err := s.svc.Registry().Delete(r.Context(), d.Member())
	if err != nil {
		s.fail(w, r, fmt.Errorf("remove device: %w", err))
		return
	}
	if n == 0 {
		s.fail(w, r, &Problem{Code: queue.CodeNotFound, Detail: "the device is not registered"})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// importResponse answers POST /v1/devices/import.
type importResponse struct {
	Imported int `json:"imported"`
}

func (s *Server) importDevices(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	req, err := queue.ParseImportRequest(a.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.svc.Registry().Import(r.Context(), req.Devices); err != nil {
		s.fail(w, r, fmt.Errorf("import devices: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, importResponse{Imported: len(req.Devices)})
}
