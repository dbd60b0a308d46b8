package queue

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/redistest"
)

func TestParseKillEvent(t *testing.T) {
	tests := []struct {
		give      string
		wantV     int64
		wantScope string
		wantErr   bool
	}{
		{give: "7", wantV: 7},
		{give: "7 kill broadcast:b1", wantV: 7, wantScope: "broadcast:b1"},
		{give: "8 kill global", wantV: 8, wantScope: api.ScopeGlobal},
		{give: "9 kill key:city-alerts", wantV: 9, wantScope: "key:city-alerts"},
		{give: "9 kill nonsense", wantV: 9},
		{give: "9 resume topic:news", wantV: 9},
		{give: "x kill global", wantErr: true},
	}
	for _, tt := range tests {
		v, scope, err := parseKillEvent(tt.give)
		if v != tt.wantV || scope != tt.wantScope || (err != nil) != tt.wantErr {
			t.Errorf("parseKillEvent(%q) = %d, %q, %v; want %d, %q, error %t", tt.give, v, scope, err, tt.wantV, tt.wantScope, tt.wantErr)
		}
	}
}

// TestKillAnnouncementNamesItsScope checks what the kill channel carries:
// a kill names its scope, so that workers can stop it before loading the
// new state; a resume only bumps the version.
func TestKillAnnouncementNamesItsScope(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Client(t)
	keys := NewKeys("")
	kills := NewKills(rdb, keys, time.Now)
	ps := rdb.Subscribe(ctx, keys.KillChannel())
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := ps.Channel()
	next := func() string {
		select {
		case m := <-msgs:
			return m.Payload
		case <-time.After(hangGuard):
			t.Fatal("hung: no announcement")
			return ""
		}
	}

	if _, err := kills.Kill(ctx, api.TopicScope("news"), "test", "admin"); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "1 kill topic:news" {
		t.Errorf("kill announced %q, want %q", got, "1 kill topic:news")
	}
	if _, _, err := kills.Resume(ctx, api.TopicScope("news")); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "2" {
		t.Errorf("resume announced %q, want %q", got, "2")
	}
}

// TestStopNowStopsAnnouncedScope checks the early stop of an announced
// kill: flights in its scope, running or new, admit no call and let no
// request leave, before any state is loaded; others go on; the view keeps
// its version, so the loaded state still replaces it.
func TestStopNowStopsAnnouncedScope(t *testing.T) {
	ks := NewKillSwitch(NewKills(nil, NewKeys(""), time.Now), "w1", slog.New(slog.DiscardHandler))
	ctx := context.Background()
	hit := ks.begin(ctx, Scope{BroadcastID: "b1", KeyID: "k1"})
	other := ks.begin(ctx, Scope{BroadcastID: "b2", KeyID: "k1"})
	defer hit.end()
	defer other.end()

	ks.stopNow(api.BroadcastScope("b1"))

	if hit.Enter() || hit.Commit() {
		t.Error("a running flight of the announced scope still admits calls")
	}
	if got := hit.killed(); got != api.BroadcastScope("b1") {
		t.Errorf("flight killed by %q, want %q", got, api.BroadcastScope("b1"))
	}
	if !other.Enter() || !other.Commit() {
		t.Error("a flight of another broadcast was stopped")
	}
	other.Leave(1)
	late := ks.begin(ctx, Scope{BroadcastID: "b1", KeyID: "k1"})
	defer late.end()
	if late.Enter() {
		t.Error("a flight begun after the announcement admits calls")
	}
	if v := ks.Version(); v != 0 {
		t.Errorf("version = %d after an announcement, want 0 (unchanged until the state is loaded)", v)
	}
}
