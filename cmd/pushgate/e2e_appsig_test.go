package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/bench"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing/appsig"
)

// showingOn returns the tokens of the phones of devs that show a
// notification of broadcast id under its collapse id, with title (any
// title when title is "").
func showingOn(s *sim.Sim, devs []sim.Device, id, title string) map[string]bool {
	out := map[string]bool{}
	for _, d := range devs {
		v, _ := s.Device(d.Token)
		for _, n := range v.Screen {
			if n.CollapseID == queue.CollapseID(id) && (title == "" || n.Title == title) {
				out[d.Token] = true
			}
		}
	}
	return out
}

// tokensOf is the set of the devices' tokens.
func tokensOf(devs []sim.Device) map[string]bool {
	out := make(map[string]bool, len(devs))
	for _, d := range devs {
		out[d.Token] = true
	}
	return out
}

// TestPhonesShowOnlyWhatPushgateSigned plays, against phones whose app
// verifies pushgate's app signature (require mode), a legitimate
// broadcast, its replacement and its removal; pushes sent straight to the
// simulators with the official SDKs and the deployment's own FCM and APNs
// credentials; a broadcast re-sent after its ledger was deleted in Redis;
// and one re-targeted in Redis to phones of another topic.
func TestPhonesShowOnlyWhatPushgateSigned(t *testing.T) {
	for _, mode := range []string{"require", "sign"} {
		t.Run(mode, func(t *testing.T) { testPhonesShowOnlyWhatPushgateSigned(t, mode) })
	}
}

func testPhonesShowOnlyWhatPushgateSigned(t *testing.T, mode string) {
	e := newE2E(t, stack.Options{Devices: 60, AndroidShare: 0.5, Seed: 21, AppSigning: mode,
		// The forger signs an APNs provider token of its own with the
		// deployment's key, beside the gateway's: let the simulator take
		// both.
		SimConfig: func(c *sim.Config) { c.MinTokenRefresh = -1 }}, app.Roles{API: true, Worker: true})
	ctx := context.Background()
	city, district := e.st.Devices[:40], e.st.Devices[40:]
	if err := e.st.ImportDevicesOf(ctx, e.owner, "citizens", city); err != nil {
		t.Fatal(err)
	}
	if err := e.st.ImportDevicesOf(ctx, e.owner, "district-9a", district); err != nil {
		t.Fatal(err)
	}
	s := e.st.Sim

	// A legitimate broadcast shows on every phone of its topic.
	id := e.submit(e.owner, topicBroadcast("citizens", "Flood warning"))
	if st := e.waitFinished(id); st.State != api.StateCompleted {
		t.Fatalf("broadcast ended %s", st.State)
	}
	if got := showingOn(s, e.st.Devices, id, "Flood warning"); len(got) != len(city) {
		t.Fatalf("%d phones show the signed broadcast, want %d", len(got), len(city))
	}

	// A tokens audience: each push is bound to its own device's token.
	var few []api.Device
	for _, d := range city[:5] {
		few = append(few, api.Device{Platform: d.Platform, Token: d.Token})
	}
	tid := e.submit(e.owner, &api.BroadcastRequest{Audience: api.Audience{Tokens: few},
		Message: api.MessageSpec{Title: "For five", Body: "b"}})
	if st := e.waitFinished(tid); st.State != api.StateCompleted {
		t.Fatalf("tokens broadcast ended %s", st.State)
	}
	if got := showingOn(s, e.st.Devices, tid, "For five"); len(got) != len(few) {
		t.Fatalf("%d phones show the tokens broadcast, want %d", len(got), len(few))
	}

	// Sent around pushgate with the deployment's credentials: the
	// simulators accept every push, no phone shows one.
	before := s.Stats().Deliveries
	if err := bench.RunBareLoop(ctx, filepath.Join(e.st.Dir, "sim", "sim.json"), 8, "FORGED", filepath.Join(t.TempDir(), "pass.json")); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().Deliveries - before; n < int64(len(e.st.Devices)) {
		t.Fatalf("the providers delivered %d forged pushes, want one to each of %d phones", n, len(e.st.Devices))
	}
	for _, d := range e.st.Devices {
		v, _ := s.Device(d.Token)
		for _, n := range v.Screen {
			if n.Title == "FORGED" {
				t.Fatalf("phone %s shows a push sent around pushgate", d.Platform)
			}
		}
	}
	// The forger copies pushgate's unsigned metadata block, which has no
	// version: refused before any key is looked at.
	if r := s.Refusals(); r[appsig.CodeMalformed]+r[appsig.CodeVersion] < int64(len(e.st.Devices)) {
		t.Errorf("phones refused %v, want every one of the %d forged pushes as malformed or unsupported_version", r, len(e.st.Devices))
	}

	// Re-sent after its ledger was deleted in Redis: delivered again, shown
	// once.
	rdb, keys := e.redisOf(), queue.NewKeys("")
	delivered := s.Stats().Deliveries
	for _, k := range []string{keys.Ledger(id), keys.Plan(id), keys.Planned(id), keys.Done(id)} {
		rdb.Del(ctx, k)
	}
	rdb.HSet(ctx, keys.Broadcast(id), "state", api.StateQueued)
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(queue.PlanTask(id), asynq.Queue(queue.QueuePlan)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the re-sent broadcast to reach the phones again", func() bool {
		return s.Refusals()[appsig.CodeAlreadyShown] >= int64(len(city))
	})
	if n := s.Stats().Deliveries - delivered; n < int64(len(city)) {
		t.Errorf("the re-send delivered %d pushes, want at least %d", n, len(city))
	}
	for _, d := range city {
		v, _ := s.Device(d.Token)
		shown := 0
		for _, n := range v.Screen {
			if n.Broadcast == id {
				shown++
			}
		}
		if shown != 1 {
			t.Fatalf("a phone shows the re-sent broadcast %d times, want once", shown)
		}
	}
	e.waitFinished(id)

	// Re-targeted in Redis: the district's phones written into the city's
	// topic. They receive a push bound to "citizens" and show nothing.
	reg := e.app.App.Service().Registry()
	for _, d := range district {
		if err := reg.Put(ctx, api.Device{Platform: d.Platform, Token: d.Token}, []string{"citizens"}); err != nil {
			t.Fatal(err)
		}
	}
	wrongBefore := s.Refusals()[appsig.CodeWrongAud]
	id2 := e.submit(e.owner, topicBroadcast("citizens", "Second warning"))
	if st := e.waitFinished(id2); st.State != api.StateCompleted {
		t.Fatalf("second broadcast ended %s", st.State)
	}
	got := showingOn(s, e.st.Devices, id2, "Second warning")
	for tok := range got {
		if tokensOf(district)[tok] {
			t.Fatal("a phone outside the signed topic shows a broadcast re-targeted to it in Redis")
		}
	}
	if len(got) != len(city) {
		t.Errorf("%d phones of the topic show the second broadcast, want %d", len(got), len(city))
	}
	if n := s.Refusals()[appsig.CodeWrongAud] - wrongBefore; n != int64(len(district)) {
		t.Errorf("phones refused %d pushes as addressed to others, want %d (the re-targeted phones)", n, len(district))
	}

	// The standard retraction replaces it everywhere, a removal removes it.
	if _, _, err := e.admin.Recall(ctx, id2, retraction()); err != nil {
		t.Fatal(err)
	}
	title := queue.DefaultPolicy().RetractionTitle
	waitUntil(t, "the retraction on every phone", func() bool { return len(showingOn(s, e.st.Devices, id2, title)) == len(city) })
	if n := len(showingOn(s, e.st.Devices, id2, "Second warning")); n != 0 {
		t.Errorf("%d phones still show the recalled text", n)
	}
	if _, _, err := e.admin.Recall(ctx, id, &api.RecallRequest{Mode: api.RecallRemove}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the removal on every phone", func() bool { return len(showingOn(s, e.st.Devices, id, "")) == 0 })
}

// TestSignedPayloadTooLargeIsRefused submits a message that fits the
// providers unsigned but not once signed in require mode (its text then
// travels inside the block, escaped twice): the API refuses it, and a
// recall with such a replacement, with the size; the same message is
// accepted with signing off.
func TestSignedPayloadTooLargeIsRefused(t *testing.T) {
	quoted := &api.BroadcastRequest{Audience: api.Audience{Topic: "citizens"},
		Message: api.MessageSpec{Title: "Quotes", Body: strings.Repeat(`"`, 1400)}}
	for _, mode := range []string{"", "require"} {
		e := newE2E(t, stack.Options{Devices: 4, Seed: 3, AppSigning: mode}, app.Roles{API: true, Worker: true})
		ctx := context.Background()
		if err := e.st.ImportDevices(ctx, e.owner, "citizens"); err != nil {
			t.Fatal(err)
		}
		_, err := e.owner.Submit(ctx, quoted)
		if mode == "" {
			if err != nil {
				t.Fatalf("unsigned: %v", err)
			}
			continue
		}
		tooLarge := func(what string, err error) {
			t.Helper()
			var p *api.Problem
			if !errors.As(err, &p) || p.Code != api.CodeInvalidMessage || !strings.Contains(p.Detail, "signed payload is") {
				t.Fatalf("require mode, %s: %v, want %s naming the signed payload's size", what, err, api.CodeInvalidMessage)
			}
		}
		tooLarge("broadcast", err)
		id := e.submit(e.owner, topicBroadcast("citizens", "Small"))
		e.waitFinished(id)
		_, _, err = e.admin.Recall(ctx, id, &api.RecallRequest{Mode: api.RecallReplace, Replacement: &quoted.Message})
		tooLarge("recall", err)
	}
}
