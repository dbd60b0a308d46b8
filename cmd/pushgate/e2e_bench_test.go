package main

import (
	"context"
	"testing"
	"time"

	"github.com/pushgate/pushgate/queue"
)

// BenchmarkRecall100k measures a recall of a broadcast that reached
// 100,000 phones: from the recall request to the broadcast's recalled
// state, with a correction on every phone's screen.
//
//	./scripts/bench Recall100k ./cmd/pushgate/ -benchtime 1x
func BenchmarkRecall100k(b *testing.B) {
	const devices = 100000
	e := newE2E(b, stackOptions{devices: devices, androidShare: 0.6, seed: 9, settings: map[string]string{
		"limits.fcm_rate": "unlimited", "limits.apns_rate": "unlimited",
	}}, roles{api: true, worker: true})
	ctx := context.Background()
	if err := e.st.importDevices(ctx, e.owner, "citizens"); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for range b.N {
		id := e.submit(e.owner, topicBroadcast("citizens", "wrong"))
		if st := e.waitFinished(id); st.Counters.Sent != devices {
			b.Fatalf("broadcast sent %d, want %d", st.Counters.Sent, devices)
		}
		start := time.Now()
		if _, err := e.admin.do(ctx, "POST", "/v1/broadcasts/"+id+"/recall", nil,
			map[string]any{"mode": "replace", "replacement": map[string]string{"title": "right", "body": "corrected"}}, nil); err != nil {
			b.Fatal(err)
		}
		waitUntil(b, "the recall", func() bool { return e.status(id).State == queue.StateRecalled })
		total += time.Since(start)
		for _, s := range e.st.sim.Showing(queue.CollapseID(id)) {
			if s.Title != "right" || s.Phones != devices {
				b.Fatalf("after the recall %d phones show %q, want all %d showing the correction", s.Phones, s.Title, devices)
			}
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "recall-s")
	b.ReportMetric(float64(devices)*float64(b.N)/total.Seconds(), "phones/s")
	b.ReportMetric(0, "ns/op")
}
