package main

import (
	"context"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/queue"
)

// BenchmarkRecall100k measures a recall of a broadcast that reached
// 100,000 phones: from the recall request to the broadcast's recalled
// state, with a correction on every phone's screen.
//
//	./scripts/bench Recall100k ./cmd/pushgate/ -benchtime 1x
func BenchmarkRecall100k(b *testing.B) {
	const devices = 100000
	e := newE2E(b, stack.Options{Devices: devices, AndroidShare: 0.6, Seed: 9, Settings: map[string]string{
		"limits.fcm_rate": "unlimited", "limits.apns_rate": "unlimited",
	}}, app.Roles{API: true, Worker: true})
	ctx := context.Background()
	if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for range b.N {
		id := e.submit(e.owner, topicBroadcast("citizens", "wrong"))
		if st := e.waitFinished(id); st.Counters.Sent != devices {
			b.Fatalf("broadcast sent %d, want %d", st.Counters.Sent, devices)
		}
		start := time.Now()
		if _, _, err := e.admin.Recall(ctx, id, retraction()); err != nil {
			b.Fatal(err)
		}
		waitUntil(b, "the recall", func() bool { return e.status(id).State == api.StateRecalled })
		total += time.Since(start)
		for _, s := range e.st.Sim.Showing(queue.CollapseID(id)) {
			if s.Title != retraction().Replacement.Title || s.Phones != devices {
				b.Fatalf("after the recall %d phones show %q, want all %d showing the correction", s.Phones, s.Title, devices)
			}
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "recall-s")
	b.ReportMetric(float64(devices)*float64(b.N)/total.Seconds(), "phones/s")
	b.ReportMetric(0, "ns/op")
}
