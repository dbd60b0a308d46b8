package gateway

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/pushgate/pushgate/api"
)

// pathDevice reads and validates the device named by the path.
func pathDevice(r *http.Request) (api.Device, error) {
	return api.NewDevice(r.PathValue("platform"), r.PathValue("token"))
}

func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	d, err := pathDevice(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req, err := api.ParseDeviceRequest(a.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	topics := slices.Compact(slices.Sorted(slices.Values(req.Topics)))
	topics, err = s.svc.PutDevice(r.Context(), a.verified.Key, d, topics)
	if err != nil {
		s.fail(w, r, fmt.Errorf("register device: %w", err))
		return
	}
	if topics == nil {
		topics = []string{}
	}
	writeJSON(w, http.StatusOK, api.DeviceResponse{Platform: string(d.Platform), Topics: topics})
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) {
	d, err := pathDevice(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	found, err := s.svc.DeleteDevice(r.Context(), authFrom(r.Context()).verified.Key, d)
	if err != nil {
		s.fail(w, r, fmt.Errorf("remove device: %w", err))
		return
	}
	if !found {
		s.fail(w, r, api.Errorf(api.CodeNotFound, "the device is not registered in a topic this key registers into"))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) importDevices(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	req, err := api.ParseImportRequest(a.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.svc.ImportDevices(r.Context(), a.verified.Key, req.Devices); err != nil {
		s.fail(w, r, fmt.Errorf("import devices: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, api.ImportResponse{Imported: len(req.Devices)})
}
