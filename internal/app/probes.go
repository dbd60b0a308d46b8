package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/queue"
)

// probeTimeout bounds the Redis ping of /readyz.
const probeTimeout = time.Second

// addProbes serves /healthz and /readyz on the metrics listener's mux, so
// that a process without an API (a worker) has them too. /healthz answers
// while the process runs; /readyz when Redis answers, no data loss was
// found, the process's view of the control log is consistent and fresh,
// and, in a process with a worker, no provider refuses the deployment's
// credential. A refusal is a problem naming what is wrong.
func (a *App) addProbes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		writeProbe(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET "+api.PathReadyz, func(w http.ResponseWriter, r *http.Request) {
		if err := a.ready(r.Context()); err != nil {
			p, _ := api.ProblemOf(err)
			writeProbe(w, p.Status, p)
			return
		}
		writeProbe(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// ready returns why the process is not ready, nil when it is.
func (a *App) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if err := a.rdb.Ping(ctx).Err(); err != nil {
		return api.Errorf(api.CodeUnavailable, "Redis does not answer: %v", err)
	}
	var lost *queue.DataLostError
	if errors.As(a.deployment.Err(), &lost) {
		return api.Errorf(api.CodeRedisDataLost, "Redis lost data: %s; pushgate redis status says more", lost.Reason())
	}
	if err := a.control.Err(); err != nil {
		return api.Errorf(api.CodeControlLogInconsistent, "the control log failed its checks: %v", err)
	}
	if !a.control.Fresh() {
		return api.Errorf(api.CodeControlLogUnavailable, "this process's view of the control log is stale: is an integrator running?")
	}
	if a.worker != nil {
		if d := a.worker.DegradedProviders(); len(d) > 0 {
			parts := make([]string, 0, len(d))
			for p, why := range d {
				parts = append(parts, fmt.Sprintf("%s refuses the deployment's credential (%s): no %s device can be sent to until it is fixed", p, why, p))
			}
			slices.Sort(parts)
			return api.Errorf(api.CodeProviderDegraded, "%s", strings.Join(parts, "; "))
		}
	}
	return nil
}

// writeProbe writes a probe's JSON answer, a problem when status is not
// 200.
func writeProbe(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	ct := "application/json"
	if status != http.StatusOK {
		ct = api.ProblemContentType
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
