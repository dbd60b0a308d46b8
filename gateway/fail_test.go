package gateway

import (
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
)

// TestRetryAfterHeader checks that a refusal that says when to come back
// answers with Retry-After, in whole seconds rounded up.
func TestRetryAfterHeader(t *testing.T) {
	s := &Server{logger: slog.New(slog.DiscardHandler)}
	for _, tt := range []struct {
		give time.Duration
		want string
	}{{0, ""}, {time.Second, "1"}, {1500 * time.Millisecond, "2"}, {time.Hour, "3600"}} {
		e := api.Errorf(api.CodeReachBudgetExceeded, "spent")
		e.RetryAfter = tt.give
		w := httptest.NewRecorder()
		s.fail(w, httptest.NewRequest("POST", "/v1/broadcasts", nil), e)
		if got := w.Header().Get("Retry-After"); got != tt.want || w.Code != 429 {
			t.Errorf("RetryAfter %v: %d Retry-After %q, want 429 %q", tt.give, w.Code, got, tt.want)
		}
	}
}
