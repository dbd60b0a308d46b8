package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
)

// BenchmarkPlanMillion plans a broadcast to a 1,000,000-device topic and
// reports the planning time, the peak Go heap while planning, and the
// process's peak RSS. Planning reads the topic with SSCAN pages and never
// holds it whole, so the heap stays flat however large the topic is.
//
//	./scripts/bench PlanMillion ./queue/ -benchtime 1x
func BenchmarkPlanMillion(b *testing.B) {
	const devices = 1_000_000
	f := newFixture(b, func(p *Policy) {})
	benchRegister(b, f.rdb, f.keys, "citizens", devices)
	w, err := NewWorker(WorkerConfig{Config: f.config(f.control),
		Senders: map[providers.Platform]Sender{providers.FCM: f.fcm, providers.APNs: f.apns}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	var planTime time.Duration
	var peakHeap uint64
	for i := range b.N {
		st := f.mustSubmit(broadcastBody(`{"topic":"citizens"}`, fmt.Sprintf("bench-%d", i)))
		payload, _ := json.Marshal(planPayload{Broadcast: st.ID})
		runtime.GC()
		sampler := startPeakSampler()
		start := time.Now()
		if err := w.plan(ctx, asynq.NewTask(TypePlan, payload)); err != nil {
			b.Fatal(err)
		}
		planTime += time.Since(start)
		peakHeap = max(peakHeap, sampler.Stop())
		got, err := f.svc.Get(ctx, st.ID)
		if err != nil {
			b.Fatal(err)
		}
		if got.Counters.Planned != devices {
			b.Fatalf("planned %d devices, want %d", got.Counters.Planned, devices)
		}
		b.StopTimer()
		if err := insp.DeleteQueue(QueueDeliver, true); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(planTime.Seconds()/float64(b.N), "plan-s")
	b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MB")
	b.ReportMetric(maxRSS(), "max-rss-MB")
	b.ReportMetric(0, "ns/op")
}

func benchRegister(b *testing.B, rdb *redis.Client, keys Keys, topic string, n int) {
	ctx := context.Background()
	const chunk = 10000
	for start := 0; start < n; start += chunk {
		devices := make([]api.ImportDevice, 0, chunk)
		for i := start; i < min(n, start+chunk); i++ {
			d := api.ImportDevice{Platform: "apns", Token: fmt.Sprintf("%064x", i), Topics: []string{topic}}
			if i%5 < 3 {
				d.Platform = "fcm"
				d.Token = fmt.Sprintf("bench-token-%07d-%s", i, "cW9ja2VkLWZjbS10b2tlbi1wYWRkaW5nLXRvLWxvb2stcmVhbGlzdGlj")
			}
			devices = append(devices, d)
		}
		if err := NewRegistry(rdb, keys).Import(ctx, devices); err != nil {
			b.Fatal(err)
		}
	}
}

// peakSampler records the largest heap in use while it runs.
type peakSampler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak uint64
}

func startPeakSampler() *peakSampler {
	s := &peakSampler{stop: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			s.peak = max(s.peak, ms.HeapInuse)
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *peakSampler) Stop() uint64 {
	close(s.stop)
	s.wg.Wait()
	return s.peak
}

func maxRSS() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024 // Linux reports KiB
}
