package queue

import (
	"context"
	"fmt"

	"github.com/pushgate/pushgate/api"
)

// defaultFailureWarnShare is Policy.FailureWarnShare unless configured.
const defaultFailureWarnShare = 0.05

// noteTransition counts and logs a broadcast's move to state ("" when it
// did not move): one info line per change, and when the broadcast's
// delivery has ended, one summary line (reportEnded).
func (c *core) noteTransition(ctx context.Context, id, state string) {
	if state == "" {
		return
	}
	c.metrics.transition(state)
	switch state {
	case api.StateCompleted, api.StateKilled, api.StateCancelled:
		c.reportEnded(ctx, id)
	default:
		c.logger.Info("broadcast state changed", "broadcast_id", id, "state", state)
	}
}

// reportEnded logs the summary of a broadcast whose delivery ended: its
// state, counters, top reasons and duration, at warning level when the
// share of its devices that failed or expired is over
// Policy.FailureWarnShare.
func (c *core) reportEnded(ctx context.Context, id string) {
	st, err := c.store.get(ctx, id, false)
	if err != nil {
		c.logger.Warn("broadcast ended; its status could not be read", "broadcast_id", id, "err", err)
		return
	}
	n := st.Counters
	attrs := []any{"broadcast_id", id, "state", st.State, "key_id", st.KeyID,
		"targeted", n.Targeted, "sent", n.Sent, "failed", n.Failed, "expired", n.Expired,
		"invalid_token", n.InvalidToken, "cancelled", n.Cancelled, "uncertain", n.Uncertain,
		"held", n.Held, "throttled", n.Throttled, "capped", n.Capped,
		"retries", n.Retries, "rate_limited", n.RateLimitedRetries}
	if top := st.Reasons.Top(3); top != "" {
		attrs = append(attrs, "top_reasons", top)
	}
	if !st.FinishedAt.IsZero() && !st.CreatedAt.IsZero() {
		attrs = append(attrs, "duration", st.FinishedAt.Sub(st.CreatedAt).Round(1e6).String())
	}
	share := 0.0
	if n.Targeted > 0 {
		share = float64(n.Failed+n.Expired) / float64(n.Targeted)
	}
	if warn := c.policy.FailureWarnShare; warn > 0 && share > warn {
		attrs = append(attrs, "failure_share", fmt.Sprintf("%.1f%%", 100*share))
		c.logger.Warn(fmt.Sprintf("broadcast ended with %.1f%% of its devices failed or expired, over %.1f%%",
			100*share, 100*warn), attrs...)
		return
	}
	c.logger.Info("broadcast ended", attrs...)
}
