package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// embeddedRedis is an in-process Redis (miniredis) on a loopback port. It
// holds everything in memory: nothing survives the process.
type embeddedRedis struct {
	srv  *miniredis.Miniredis
	stop context.CancelFunc
	done chan struct{}
}

func startEmbeddedRedis() (*embeddedRedis, error) {
	srv := miniredis.NewMiniRedis()
	if err := srv.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("embedded redis: %w", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &embeddedRedis{srv: srv, stop: stop, done: make(chan struct{})}
	go r.expire(ctx)
	return r, nil
}

// expire advances miniredis's key TTLs with the wall clock once a second,
// so that keys written with a TTL (replay-guard nonces, idempotency keys)
// expire as they would in Redis. miniredis freezes TTLs by default, and its
// ClockTTL mode re-sorts every key of every database on every command,
// which made a 10,000-device import time out.
func (r *embeddedRedis) expire(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.srv.FastForward(now.Sub(last))
			last = now
		}
	}
}

func (r *embeddedRedis) addr() string { return r.srv.Addr() }
func (r *embeddedRedis) url() string  { return "redis://" + r.srv.Addr() + "/0" }

// close stops the TTL clock and the server, dropping every connection.
func (r *embeddedRedis) close() {
	r.stop()
	<-r.done
	r.srv.Close()
}
