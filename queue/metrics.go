package queue

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushgate/pushgate/providers"
)

// Metrics are the pipeline's Prometheus metrics, registered on a registry
// the process owns.
type Metrics struct {
	deliveries   *prometheus.CounterVec
	refusals     *prometheus.CounterVec
	degraded     *prometheus.GaugeVec
	latency      *prometheus.HistogramVec
	transitions  *prometheus.CounterVec
	refused      *prometheus.CounterVec
	killsApplied prometheus.Counter

	pausedUntil    *prometheus.GaugeVec
	pauses         *prometheus.CounterVec
	pauseDeferrals *prometheus.CounterVec

	controlFailures prometheus.Counter
	controlSize     prometheus.Gauge

	workersReaped prometheus.Counter
	tasksResumed  prometheus.Counter
}

// NewMetrics creates the pipeline metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_deliveries_total",
			Help: "Provider outcomes per device, by platform and result (sent, invalid_token, retryable, permanent, cancelled), and devices given up as expired (the broadcast's TTL, or limits.retry_for, ran out before a send got through).",
		}, []string{"platform", "result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_provider_refusals_total",
			Help: "Provider answers other than sent, by platform, result (invalid_token, retryable, permanent) and bounded reason code (Apple's and FCM's reasons, HTTP <status>, transport, oauth2_refused, oauth2_unavailable, sdk, message_refused, empty_token, other).",
		}, []string{"platform", "result", "reason"}),
		degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushgate_provider_degraded",
			Help: "1 while this worker finds the provider refusing the deployment's credential (provider token, certificate, OAuth2 token, service account), else 0.",
		}, []string{"platform"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushgate_provider_latency_seconds",
			Help:    "Duration of provider calls, by platform.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"platform"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_broadcasts_total",
			Help: "Broadcasts that entered each state in this process.",
		}, []string{"state"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_tasks_refused_total",
			Help: "Tasks refused because their envelope did not verify or they named devices outside the audience: security events.",
		}, []string{"task", "reason"}),
		killsApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_kill_versions_applied_total",
			Help: "Views of the control log this worker applied to its flights and acknowledged.",
		}),
		pausedUntil: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushgate_provider_paused_until_seconds",
			Help: "Unix time at which this worker's latest pause of a provider ends (in the past: not paused), by platform.",
		}, []string{"platform"}),
		pauses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_provider_pauses_total",
			Help: "Pauses of a provider this worker started on a provider-wide refusal (429/503), by platform.",
		}, []string{"platform"}),
		pauseDeferrals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_provider_pause_deferrals_total",
			Help: "Devices deferred untried to the end of their provider's pause, by platform.",
		}, []string{"platform"}),
		controlFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_control_log_failures_total",
			Help: "Times this process found the control log inconsistent (rolled back, forked, altered or badly signed) and failed closed: security events.",
		}),
		controlSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushgate_control_log_entries",
			Help: "Entries in the control log as this process last verified it.",
		}),
	}
	reg.MustRegister(m.deliveries, m.refusals, m.degraded, m.latency, m.transitions, m.refused, m.killsApplied, m.controlFailures, m.controlSize,
		m.pausedUntil, m.pauses, m.pauseDeferrals)
	m.registerReaper(reg)
	return m
}

// expired counts n devices of a platform given up as expired.
func (m *Metrics) expired(platform providers.Platform, n int) {
	if m != nil && n > 0 {
		m.deliveries.WithLabelValues(string(platform), "expired").Add(float64(n))
	}
}

// registerReaper creates and registers the reaper's metrics
// (queue/reaper.go).
func (m *Metrics) registerReaper(reg prometheus.Registerer) {
	m.workersReaped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pushgate_workers_reaped_total",
		Help: "Workers whose heartbeat ran out that this process reaped, taking the tasks they were running.",
	})
	m.tasksResumed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pushgate_tasks_resumed_total",
		Help: "Tasks of reaped workers this process enqueued again.",
	})
	reg.MustRegister(m.workersReaped, m.tasksResumed)
}

func (m *Metrics) transition(state string) {
	if m != nil && state != "" {
		m.transitions.WithLabelValues(state).Inc()
	}
}

// QueueDepth reports the pipeline's asynq queue sizes, by queue and task
// state, from memory: Run reads them from Redis every interval, so that a
// scrape never waits on Redis and still answers while Redis is down, with
// the last sizes read and how old they are.
type QueueDepth struct {
	insp  *asynq.Inspector
	every time.Duration
	now   func() time.Time
	desc  *prometheus.Desc
	age   *prometheus.Desc

	mu     sync.Mutex
	sizes  map[[2]string]int // {queue, state} → tasks
	readAt time.Time         // when sizes were read; zero before the first read
}

// NewQueueDepth returns a QueueDepth that reads insp every interval (a
// second when not positive). Register it, and run Run.
func NewQueueDepth(insp *asynq.Inspector, every time.Duration) *QueueDepth {
	if every <= 0 {
		every = time.Second
	}
	return &QueueDepth{insp: insp, every: every, now: time.Now,
		desc: prometheus.NewDesc("pushgate_queue_tasks", "Tasks in each pipeline queue, by state, as last read from Redis.",
			[]string{"queue", "state"}, nil),
		age: prometheus.NewDesc("pushgate_queue_tasks_age_seconds",
			"How old the queue sizes of pushgate_queue_tasks are; it grows while Redis cannot be read.", nil, nil)}
}

// Run reads the queue sizes every interval until ctx is done.
func (q *QueueDepth) Run(ctx context.Context) {
	t := time.NewTicker(q.every)
	defer t.Stop()
	for {
		q.read()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// read takes the sizes of every pipeline queue from Redis; on failure the
// previous sizes stay, and age says so.
func (q *QueueDepth) read() {
	known, err := q.insp.Queues()
	if err != nil {
		return
	}
	sizes := map[[2]string]int{}
	for _, name := range []string{QueueRecall, QueuePlan, QueueDeliver} {
		if !slices.Contains(known, name) {
			continue // a queue that was never used does not exist yet
		}
		info, err := q.insp.GetQueueInfo(name)
		if err != nil {
			return
		}
		for state, n := range map[string]int{
			"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived,
		} {
			sizes[[2]string{name, state}] = n
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sizes, q.readAt = sizes, q.now()
}

// Describe implements prometheus.Collector.
func (q *QueueDepth) Describe(ch chan<- *prometheus.Desc) { ch <- q.desc; ch <- q.age }

// Collect implements prometheus.Collector, from memory only.
func (q *QueueDepth) Collect(ch chan<- prometheus.Metric) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.readAt.IsZero() {
		return
	}
	for k, n := range q.sizes {
		ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(q.age, prometheus.GaugeValue, q.now().Sub(q.readAt).Seconds())
}
