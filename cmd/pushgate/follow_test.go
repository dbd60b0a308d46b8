package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestFollowProgressPlain(t *testing.T) {
	var b bytes.Buffer
	p := newFollowProgress(&env{stderr: &b, plainEvery: time.Minute})
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at         time.Duration
		what, desc string
		done       int64
		want       string // what this update writes
	}{
		{0, "queued", "queued: 0 sent", 0, "queued: 0 sent (0 of 100 devices done)\n"},
		{time.Second, "sending", "sending: 10 sent", 10, "sending: 10 sent (10 of 100 devices done)\n"},
		{2 * time.Second, "sending", "sending: 20 sent", 20, ""},
		// A limit starts holding it back: at once.
		{3 * time.Second, "sending; provider fcm at 10/1s", "sending: 30 sent; held back by provider fcm at 10/1s", 30,
			"sending: 30 sent; held back by provider fcm at 10/1s (30 of 100 devices done)\n"},
		{4 * time.Second, "sending; provider fcm at 10/1s", "sending: 40 sent; held back by provider fcm at 10/1s", 40, ""},
		// plainEvery after the last line.
		{63 * time.Second, "sending; provider fcm at 10/1s", "sending: 90 sent; held back by provider fcm at 10/1s", 90,
			"sending: 90 sent; held back by provider fcm at 10/1s (90 of 100 devices done)\n"},
		{64 * time.Second, "completed", "completed: 100 sent", 100, "completed: 100 sent (100 of 100 devices done)\n"},
	}
	for i, s := range steps {
		before := b.Len()
		p.update(t0.Add(s.at), s.what, s.desc, s.done, 100)
		if got := b.String()[before:]; got != s.want {
			t.Errorf("step %d wrote %q, want %q", i, got, s.want)
		}
	}
	before := b.Len()
	p.finish()
	if b.Len() != before {
		t.Errorf("finish wrote %q off a terminal", b.String()[before:])
	}
	if strings.ContainsAny(b.String(), "\r\x1b") {
		t.Errorf("plain progress holds a carriage return or an escape sequence: %q", b.String())
	}
}

func TestFollowProgressTerminal(t *testing.T) {
	var b bytes.Buffer
	p := newFollowProgress(&env{stderr: &b, stderrTerminal: true, plainEvery: time.Minute})
	now := time.Now()
	p.update(now, "sending", "sending: 10 sent", 10, 100)
	p.update(now, "sending", "sending: 20 sent", 20, 100)
	p.finish()
	got := b.String()
	// The bar redraws its line in place and counts in messages.
	for _, want := range []string{"\r", "sending: 20 sent", "20/100", "msg"} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal progress %q holds no %q", got, want)
		}
	}
	if strings.Contains(got, "devices done)\n") {
		t.Errorf("terminal progress %q holds plain lines", got)
	}
}
