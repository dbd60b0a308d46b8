package providers_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
)

// benchMessages is how many messages each pass sends, in batches of
// benchBatch devices (the queue's largest batch).
const (
	benchMessages = 20000
	benchBatch    = 500
)

// BenchmarkSenders sends benchMessages to each simulator at zero latency,
// in batches of benchBatch one after the other as one deliver worker does,
// once through the sender and once through a bare loop over the sender's
// own SDK client (a goroutine pool of the same size calling Send or
// PushWithContext, with no gate, no per-call context, no classification),
// for several concurrencies. It reports both rates, their ratio and the
// process CPU time per message (simulator included: it runs in this
// process, so compare the two figures rather than read either alone).
//
//	./scripts/bench Senders ./providers/ -benchtime 1x -count 3
func BenchmarkSenders(b *testing.B) {
	s := newSim(b, sim.Config{QuotaPerMinute: -1})
	// One provider token for every APNs sender, as in production: a token
	// per sender would be refused TooManyProviderTokenUpdates.
	apnsToken := newAPNsToken(b, s, nil)
	msg := testMessage()
	for _, p := range []providers.Platform{providers.FCM, providers.APNs} {
		tokens := deviceTokens(p, "dev-", benchMessages)
		for _, tok := range tokens {
			if err := s.AddDevice(p, tok); err != nil {
				b.Fatal(err)
			}
		}
		for _, c := range []int{16, 64, 256} {
			b.Run(fmt.Sprintf("%s/c=%d", p, c), func(b *testing.B) {
				sender, bare := benchSenders(b, s, apnsToken, p, c, msg)
				// Warm up: connections, the access token.
				bare(tokens[:benchBatch])
				sender(tokens[:benchBatch])

				// The two alternate batch by batch, each going first every
				// other batch, so that a change in the machine's load (it
				// is shared) weighs on both alike.
				var senderRun, bareRun pass
				for b.Loop() {
					s.Reset()
					for i := 0; i < len(tokens); i += benchBatch {
						batch := tokens[i:min(i+benchBatch, len(tokens))]
						first, second := &bareRun, &senderRun
						sendFirst, sendSecond := bare, sender
						if (i/benchBatch)%2 == 1 {
							first, second = second, first
							sendFirst, sendSecond = sendSecond, sendFirst
						}
						first.measure(len(batch), func() { sendFirst(batch) })
						second.measure(len(batch), func() { sendSecond(batch) })
					}
				}
				b.ReportMetric(senderRun.rate(), "sender-msgs/s")
				b.ReportMetric(bareRun.rate(), "bare-msgs/s")
				b.ReportMetric(senderRun.rate()/bareRun.rate(), "ratio")
				b.ReportMetric(senderRun.cpuPerMsg(), "sender-cpu-µs/msg")
				b.ReportMetric(bareRun.cpuPerMsg(), "bare-cpu-µs/msg")
			})
		}
	}
}

// benchSenders returns a function that sends one batch through the
// sender, and one that sends it through the bare loop over the same SDK
// client; both fail the benchmark on any device that is not sent.
func benchSenders(b *testing.B, s *sim.Sim, apnsToken *providers.APNsToken, p providers.Platform, c int, msg *providers.Message) (sender, bare func([]string)) {
	var snd batchSender
	var bareCall func(ctx context.Context, token string) error
	switch p {
	case providers.FCM:
		f := newFCMSender(b, s, func(cfg *providers.FCMConfig) { cfg.Concurrency = c })
		client := f.SDKClient()
		tmpl := providers.FCMTemplate(msg, time.Now())
		snd = f
		bareCall = func(ctx context.Context, token string) error {
			m := tmpl
			m.Token = token
			_, err := client.Send(ctx, &m)
			return err
		}
	case providers.APNs:
		a := newAPNsSender(b, s, apnsToken, func(cfg *providers.APNsConfig) { cfg.Concurrency = c })
		client := a.SDKClient()
		tmpl := providers.APNsNotification(msg, time.Now(), testTopic, "")
		snd = a
		bareCall = func(ctx context.Context, token string) error {
			n := *tmpl
			n.DeviceToken = token
			resp, err := client.PushWithContext(ctx, &n)
			if err == nil && !resp.Sent() {
				err = fmt.Errorf("apns %d %s", resp.StatusCode, resp.Reason)
			}
			return err
		}
	}
	gate := &openGate{}
	sender = func(tokens []string) {
		for i, r := range snd.Send(context.Background(), gate, msg, tokens) {
			if r.Class != providers.Sent {
				b.Fatalf("sender, device %d: %v", i, r)
			}
		}
	}
	bare = func(tokens []string) {
		var next atomic.Int64
		var failed atomic.Pointer[error]
		var wg sync.WaitGroup
		for range min(c, len(tokens)) {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= len(tokens) {
						return
					}
					if err := bareCall(context.Background(), tokens[i]); err != nil {
						failed.CompareAndSwap(nil, &err)
					}
				}
			})
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			b.Fatalf("bare loop: %v", *err)
		}
	}
	return sender, bare
}

// pass accumulates the wall and CPU time of batches.
type pass struct {
	wall, cpu time.Duration
	msgs      int
}

// measure runs f, which sends msgs messages, and adds its wall time and
// the CPU time the process spent meanwhile.
func (p *pass) measure(msgs int, f func()) {
	before := cpuTime()
	start := time.Now()
	f()
	p.wall += time.Since(start)
	p.cpu += cpuTime() - before
	p.msgs += msgs
}

func (p *pass) rate() float64 { return float64(p.msgs) / p.wall.Seconds() }

func (p *pass) cpuPerMsg() float64 {
	return float64(p.cpu.Microseconds()) / float64(p.msgs)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
