package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
)

func TestDemoLiveLine(t *testing.T) {
	at := time.Date(2026, 12, 1, 7, 52, 0, 0, time.UTC)
	tests := []struct {
		name string
		give api.Status
		want string
	}{
		{
			name: "planning",
			give: api.Status{ID: "b1", Title: "Dam failure", State: api.StateQueued},
			want: `live: b1 "Dam failure" queued: finding its phones`,
		},
		{
			name: "sending, held back",
			give: api.Status{ID: "b1", Title: "Dam failure", State: api.StateSending, UpdatedAt: at,
				LimitedBy: "sender key city-slow at 12/1s", LimitedAt: at.Add(-time.Second),
				Counters: api.Counters{Targeted: 1000, Sent: 58}},
			want: `live: b1 "Dam failure" sending: 58 of 1000 phones got it; held back by sender key city-slow at 12/1s`,
		},
		{
			name: "a limit long gone",
			give: api.Status{ID: "b1", Title: "Dam failure", State: api.StateSending, UpdatedAt: at,
				LimitedBy: "sender key city-slow at 12/1s", LimitedAt: at.Add(-time.Minute),
				Counters: api.Counters{Targeted: 1000, Sent: 58}},
			want: `live: b1 "Dam failure" sending: 58 of 1000 phones got it`,
		},
		{
			name: "killed",
			give: api.Status{ID: "b1", Title: "Dam failure", State: api.StateKilled,
				Counters: api.Counters{Targeted: 1000, Sent: 107, Cancelled: 890, Uncertain: 3}},
			want: `live: b1 "Dam failure" killed: 107 of 1000 phones got it, 890 cancelled, 3 uncertain`,
		},
		{
			name: "replaced",
			give: api.Status{ID: "b2", Title: "Flood warning", State: api.StateRecalled, RecallMode: api.RecallReplace,
				Counters: api.Counters{Targeted: 1000, Sent: 1000, Recalled: 998, RecallFailed: 2}},
			want: `live: b2 "Flood warning" recalled (replace): 1000 of 1000 phones got it, 998 recalled, 2 recall failed`,
		},
		{
			name: "failures",
			give: api.Status{ID: "b3", Title: "t", State: api.StateCompleted,
				Counters: api.Counters{Targeted: 10, Sent: 5, Failed: 1, Expired: 2, InvalidToken: 2}},
			want: `live: b3 "t" completed: 5 of 10 phones got it, 1 failed, 2 expired, 2 invalid tokens`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := demoLiveLine(&tt.give); got != tt.want {
				t.Errorf("demoLiveLine:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestDemoLiveLines(t *testing.T) {
	if got := demoLiveLines(nil, errors.New("connection refused")); len(got) != 1 || !strings.Contains(got[0].text, "connection refused") {
		t.Errorf("on an error: %+v", got)
	}
	if got := demoLiveLines(nil, nil); len(got) != 1 || got[0].text != "live: no broadcast yet" {
		t.Errorf("with no broadcast: %+v", got)
	}
	sts := []*api.Status{{ID: "b1", State: api.StateKilled}, {ID: "b2", State: api.StateSending}}
	got := demoLiveLines(sts, nil)
	if len(got) != 2 || got[0].id != "b1" || got[0].what != api.StateKilled || got[1].id != "b2" || got[1].text != demoLiveLine(sts[1]) {
		t.Errorf("two broadcasts: %+v", got)
	}
}

// line is a live line of broadcast id in state what.
func line(id, what, text string) liveLine { return liveLine{id: id, what: what, text: text} }

func TestLiveWriterPlain(t *testing.T) {
	var b bytes.Buffer
	l := newLiveWriter(&b, false, time.Hour)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at   time.Duration
		give []liveLine
		want string // what this call writes
	}{
		{0, []liveLine{line("b1", "sending", "b1 sending 1")}, "b1 sending 1\n"},
		// Same state, within every: nothing new.
		{time.Second, []liveLine{line("b1", "sending", "b1 sending 2")}, ""},
		// Unchanged: never written again.
		{2 * time.Hour, []liveLine{line("b1", "sending", "b1 sending 1")}, ""},
		// every has passed since the last line written.
		{2*time.Hour + time.Second, []liveLine{line("b1", "sending", "b1 sending 3")}, "b1 sending 3\n"},
		// Another state: at once; another broadcast: at once.
		{2*time.Hour + 2*time.Second, []liveLine{line("b1", "killed", "b1 killed"), line("b2", "queued", "b2 queued")},
			"b1 killed\nb2 queued\n"},
		{2*time.Hour + 3*time.Second, []liveLine{line("b1", "killed", "b1 killed"), line("b2", "queued", "b2 queued")}, ""},
	}
	for i, s := range steps {
		before := b.Len()
		l.show(t0.Add(s.at), s.give)
		if got := b.String()[before:]; got != s.want {
			t.Errorf("step %d wrote %q, want %q", i, got, s.want)
		}
	}
	if strings.ContainsAny(b.String(), "\r\x1b") {
		t.Errorf("plain output holds a carriage return or an escape sequence: %q", b.String())
	}
}

func TestLiveWriterTerminal(t *testing.T) {
	var b bytes.Buffer
	l := newLiveWriter(&b, true, time.Hour)
	now := time.Now()
	l.show(now, []liveLine{line("b1", "sending", "b1 sending 1")})
	if got, want := b.String(), "b1 sending 1\x1b[K\n"; got != want {
		t.Fatalf("first draw %q, want %q", got, want)
	}
	b.Reset()
	l.show(now, []liveLine{line("b1", "sending", "b1 sending 2"), line("b2", "queued", "b2 queued")})
	if got, want := b.String(), "\x1b[1Fb1 sending 2\x1b[K\nb2 queued\x1b[K\n"; got != want {
		t.Fatalf("redraw %q, want %q", got, want)
	}
	b.Reset()
	l.show(now, []liveLine{line("", "none", "live: no broadcast yet")})
	if got, want := b.String(), "\x1b[2Flive: no broadcast yet\x1b[K\n\x1b[J"; got != want {
		t.Fatalf("shorter redraw %q, want %q", got, want)
	}
}

func TestCloseRemovesTemporaryDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, LogName))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	d := &demo{dir: dir, removeDir: true, logPath: f.Name(), logFile: f}
	if err := d.close(&out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there (stat: %v)", dir, err)
	}
	if !strings.Contains(out.String(), "Removed "+dir) {
		t.Errorf("close said %q", out.String())
	}
}

// TestLiveStatusesAfterRecall checks the live lines against the status
// the API gives pushgate status, after a replace recall: the line that
// said 0 recalled while status said 1000 read the simulators instead.
func TestLiveStatusesAfterRecall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard
	defer cancel()
	dir := filepath.Join(t.TempDir(), "demo")
	d, err := startDemo(ctx, demoOptions{devices: 30, dir: dir, level: slog.LevelWarn}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close(io.Discard)

	sub, err := d.sender.Submit(ctx, demoBroadcast(demoFirstTitle, demoFirstBody))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.waitStatus(ctx, sub.ID, 4*time.Minute, func(st *api.Status) bool { return !st.FinishedAt.IsZero() }); err != nil {
		t.Fatal(err)
	}
	req := api.RecallRequest{Mode: api.RecallReplace, Replacement: &api.MessageSpec{Title: demoFixTitle, Body: demoFixBody}}
	if _, _, err := d.admin.Recall(ctx, sub.ID, &req); err != nil {
		t.Fatal(err)
	}
	st, err := d.waitStatus(ctx, sub.ID, 4*time.Minute, func(st *api.Status) bool { return st.State == api.StateRecalled })
	if err != nil {
		t.Fatal(err)
	}
	if st.Counters.Recalled == 0 {
		t.Fatalf("the status counts no recalled device: %+v", st.Counters)
	}

	sts, err := d.liveStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lines := demoLiveLines(sts, nil)
	if len(lines) != 1 || lines[0].id != sub.ID {
		t.Fatalf("live lines %+v, want one of %s", lines, sub.ID)
	}
	if want := demoLiveLine(st); lines[0].text != want {
		t.Errorf("live line\n %s\nthe status read for pushgate status\n %s", lines[0].text, want)
	}
	if want := fmt.Sprintf(", %d recalled", st.Counters.Recalled); !strings.Contains(lines[0].text, want) {
		t.Errorf("live line %q does not say %q", lines[0].text, want)
	}
	// The log went to the file, which close keeps: --dir was given.
	if _, err := os.Stat(filepath.Join(dir, LogName)); err != nil {
		t.Errorf("no log file: %v", err)
	}
}
