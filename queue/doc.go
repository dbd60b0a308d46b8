// Package queue is pushgate's delivery pipeline: the broadcast store, the
// device registry, the asynq tasks that plan and deliver broadcasts, the
// per-device ledger, the rate limits, the kill-switch and recall. The walk
// of one broadcast through its files is in docs/ARCHITECTURE.md.
//
// The planner, the deliverer, the recall and the kill switch reach Redis
// only through the store (store.go, ledger.go), the registry, the control
// log's storage (controlstore.go) and the live set of workers (kill.go,
// reaper.go), as asynq's processor reaches it only through its broker. Kill,
// revocation and approval state is each process's own fold of the control
// log it verified (control.go, controlstate.go): nothing else in Redis
// decides whether work may run.
//
// # Flow
//
// Service.Submit (called by the API) stores a broadcast's record and its
// envelope — the signed request exactly as received — and enqueues a plan
// task. A Worker's planner loads the envelope and verifies its signature
// again; a task whose envelope does not verify is refused, counted and
// logged as a security event. The planner reads the audience page by page
// (SSCAN, never the whole set), and enqueues deliver tasks of at most
// MaxBatch devices of one platform, saving its cursor after each page so a
// retried plan resumes without enqueuing a batch twice.
//
// A deliver task takes only device addresses from its payload; what it
// sends comes from the verified envelope (verdicts cached per envelope
// digest), and the devices must belong to the envelope's audience. It
// claims the devices in the ledger, checks the kill-switch in memory,
// takes rate-limit tokens for the whole batch, sends, records every
// outcome, prunes invalid tokens and re-enqueues only transient failures
// (after max(Retry-After, backoff)) and rate-limited devices. No task sleeps
// on a provider. A provider that refuses provider-wide (429/503) is paused
// for every worker until its Retry-After has passed (pause.go); batches
// that meet the pause wait for its end untried.
//
// # Invariants
//
//   - Nothing reaches a phone that a verified envelope did not say, to a
//     device outside the audience that envelope names.
//   - A device with a recorded outcome for a broadcast is never sent that
//     broadcast again; a worker killed between a provider's answer and the
//     ledger write may cause one re-send, which the collapse identity
//     (CollapseID) makes replace the first copy on the phone.
//   - Once every live worker has acknowledged a control log that holds a
//     kill, no provider call in a killed scope starts, and the ledger
//     records every device the killed broadcast may have reached (recall
//     relies on it).
//   - A view of the control log that is rolled back, forked, altered or
//     badly signed fails closed; one older than its max staleness sends
//     nothing.
//   - Nothing is accepted or completed on a Redis whose deployment marker
//     is missing or another's (deployment.go), and no process writes a
//     marker over such a loss; stops are never refused for it.
//   - A dead worker's running tasks are taken by one reaper, enqueued
//     again and run within seconds (reaper.go); the worker that held them,
//     should it wake up, sends nothing more of them.
//   - A broadcast completes when planning is done and every planned device
//     has a final outcome: targeted = sent + failed + invalid_token +
//     cancelled + throttled.
//
// # Redis keys
//
// Every key is built by Keys (keys.go), under a prefix ("pg" by default):
// broadcast records, envelopes, ledgers, plan progress and timelines under
// the hash tag {bc:<id>}; the broadcast index and each sender key's own
// index of its broadcasts; idempotency keys; signature
// nonces; topic and device sets; rate-limit keys (redis_rate adds its
// "rate:" prefix); provider pauses; the control log under {log}; worker
// heartbeats and the tasks each worker runs under {workers};
// acknowledgements; security-event counters; the deployment marker. asynq
// keeps
// its tasks under its own "asynq:" keys.
package queue
