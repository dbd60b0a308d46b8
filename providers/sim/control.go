package sim

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/pushgate/pushgate/providers"
)

// The control server: JSON views and switches for tests, the demo and the
// benchmark, on plain HTTP.
//
//	GET  /sim/stats[?after=RFC3339Nano[&collapse=ID]]  Stats (+ deliveries_after)
//	GET  /sim/devices/{token}                          DeviceView
//	POST /sim/devices/{token}/online                   {"online": bool}
//	GET  /sim/showing?collapse=ID                      who shows what under ID
//	GET  /sim/deliveries[?after=&collapse=&token=&limit=]
//	GET  /sim/faults, PUT /sim/faults                  Faults
//	GET  /sim/app, PUT /sim/app, DELETE /sim/app       the app on every phone (appSettings)
//	POST /sim/reset
func (s *Sim) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sim/stats", s.ctlStats)
	mux.HandleFunc("GET /sim/devices/{token}", s.ctlDevice)
	mux.HandleFunc("POST /sim/devices/{token}/online", s.ctlOnline)
	mux.HandleFunc("GET /sim/showing", s.ctlShowing)
	mux.HandleFunc("GET /sim/deliveries", s.ctlDeliveries)
	mux.HandleFunc("GET /sim/faults", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Faults()) })
	mux.HandleFunc("PUT /sim/faults", s.ctlSetFaults)
	mux.HandleFunc("GET /sim/app", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.appView()) })
	mux.HandleFunc("PUT /sim/app", s.ctlSetApp)
	mux.HandleFunc("DELETE /sim/app", func(w http.ResponseWriter, r *http.Request) {
		s.SetApp(nil)
		writeJSON(w, http.StatusOK, s.appView())
	})
	mux.HandleFunc("POST /sim/reset", func(w http.ResponseWriter, r *http.Request) {
		s.Reset()
		writeJSON(w, http.StatusOK, map[string]bool{"reset": true})
	})
	return s.track(mux.ServeHTTP)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func ctlError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// parseAfter reads the optional ?after= time.
func parseAfter(r *http.Request) (time.Time, bool, error) {
	v := r.URL.Query().Get("after")
	if v == "" {
		return time.Time{}, false, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, true, err
}

func (s *Sim) ctlStats(w http.ResponseWriter, r *http.Request) {
	after, ok, err := parseAfter(r)
	if err != nil {
		ctlError(w, http.StatusBadRequest, "after: want an RFC 3339 time")
		return
	}
	out := struct {
		Stats
		DeliveriesAfter *int `json:"deliveries_after,omitempty"`
	}{Stats: s.Stats()}
	if ok {
		n := s.DeliveriesAfter(after, r.URL.Query().Get("collapse"))
		out.DeliveriesAfter = &n
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Sim) ctlDevice(w http.ResponseWriter, r *http.Request) {
	v, ok := s.Device(r.PathValue("token"))
	if !ok {
		ctlError(w, http.StatusNotFound, "no such device")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Sim) ctlOnline(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Online *bool `json:"online"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Online == nil {
		ctlError(w, http.StatusBadRequest, `want {"online": true|false}`)
		return
	}
	token := r.PathValue("token")
	if !s.SetOnline(token, *body.Online) {
		ctlError(w, http.StatusNotFound, "no such device")
		return
	}
	v, _ := s.Device(token)
	writeJSON(w, http.StatusOK, v)
}

func (s *Sim) ctlShowing(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("collapse")
	if id == "" {
		ctlError(w, http.StatusBadRequest, "collapse is required")
		return
	}
	shown := s.Showing(id)
	total := 0
	for _, sh := range shown {
		total += sh.Phones
	}
	writeJSON(w, http.StatusOK, map[string]any{"collapse": id, "phones": total, "by_content": shown})
}

func (s *Sim) ctlDeliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, hasAfter, err := parseAfter(r)
	if err != nil {
		ctlError(w, http.StatusBadRequest, "after: want an RFC 3339 time")
		return
	}
	limit := 1000
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 {
			ctlError(w, http.StatusBadRequest, "limit: want a positive integer")
			return
		}
	}
	collapse, token := q.Get("collapse"), q.Get("token")
	out := s.Deliveries(func(d Delivery) bool {
		return (!hasAfter || d.Time.After(after)) &&
			(collapse == "" || d.CollapseID == collapse) &&
			(token == "" || d.Token == token)
	})
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Sim) ctlSetFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&f); err != nil {
		ctlError(w, http.StatusBadRequest, "faults: "+err.Error())
		return
	}
	if err := s.SetFaults(f); err != nil {
		ctlError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.Faults())
}

// appSettings is the control API's form of an App. Keys are the trusted
// public keys by key id, each 32 bytes in base64 (unpadded base64url, as
// pushgate appkey prints them, or standard). Every phone is subscribed to
// Topics, but a phone listed in DeviceTopics to those topics instead.
type appSettings struct {
	Keys         map[string]string   `json:"keys"`
	Topics       []string            `json:"topics,omitempty"`
	DeviceTopics map[string][]string `json:"device_topics,omitempty"`
}

// app turns the settings into an App.
func (a *appSettings) app() (*App, error) {
	keys := make(map[string]ed25519.PublicKey, len(a.Keys))
	for id, enc := range a.Keys {
		k, err := decodeKey(enc)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", id, err)
		}
		keys[id] = k
	}
	topics := slices.Clone(a.Topics)
	perDevice := make(map[string][]string, len(a.DeviceTopics))
	for token, ts := range a.DeviceTopics {
		perDevice[token] = slices.Clone(ts)
	}
	return &App{Keys: keys, Topics: func(_ providers.Platform, token string) []string {
		if ts, ok := perDevice[token]; ok {
			return ts
		}
		return topics
	}}, nil
}

// decodeKey reads a public key in any of the base64 alphabets, padded or
// not.
func decodeKey(s string) (ed25519.PublicKey, error) {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// appView is what GET /sim/app shows: whether an app is installed and the
// keys it trusts, in unpadded base64url. Topics given as a Go function
// cannot be shown.
func (s *Sim) appView() map[string]any {
	app := s.App()
	if app == nil {
		return map[string]any{"installed": false}
	}
	keys := make(map[string]string, len(app.Keys))
	for id, k := range app.Keys {
		keys[id] = base64.RawURLEncoding.EncodeToString(k)
	}
	return map[string]any{"installed": true, "keys": keys}
}

func (s *Sim) ctlSetApp(w http.ResponseWriter, r *http.Request) {
	var body appSettings
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		ctlError(w, http.StatusBadRequest, "app: "+err.Error())
		return
	}
	app, err := body.app()
	if err == nil {
		err = s.SetApp(app)
	}
	if err != nil {
		ctlError(w, http.StatusBadRequest, "app: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.appView())
}
