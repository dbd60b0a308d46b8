package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing"
)

// tokensBody is a broadcast body to an explicit list of devices.
func tokensBody(title string, devs []api.Device) string {
	toks, _ := json.Marshal(devs)
	return fmt.Sprintf(`{"audience":{"tokens":%s},"message":{"title":%q,"body":"b"}}`, toks, title)
}

// TestStolenKeySweepReachesOnlyItsScopeAndBudget plays a stolen key
// scoped to district-9* (20 devices a broadcast, 100 distinct a day)
// sweeping the city 20 devices at a time with tokens audiences.
func TestStolenKeySweepReachesOnlyItsScopeAndBudget(t *testing.T) {
	f := newFixture(t, nil)
	city := f.register("citizens", 500, 0)
	district := f.register("district-9a", 300, 0)

	// Devices of other topics are refused outright; nothing is stored.
	for i := range 25 {
		_, err := f.submit(f.signers["district-9"], tokensBody("HACKED", city[i*20:(i+1)*20]))
		if api.CodeOf(err) != api.CodeDeviceNotInScope {
			t.Fatalf("sweep %d of other topics: %v, want %s", i, err, api.CodeDeviceNotInScope)
		}
	}
	unregistered := []api.Device{{Platform: providers.FCM, Token: "fcm-never-registered"}}
	if _, err := f.submit(f.signers["district-9"], tokensBody("HACKED", unregistered)); api.CodeOf(err) != api.CodeDeviceNotInScope {
		t.Fatalf("an unregistered device: %v, want %s", err, api.CodeDeviceNotInScope)
	}
	if n := f.rdb.ZCard(context.Background(), f.keys.BroadcastIndex()).Val(); n != 0 {
		t.Fatalf("%d broadcasts stored for refused submissions", n)
	}

	// In its own topics the sweep runs into the reach budget: submitted
	// at once, before any delivery has counted, all are accepted, and the
	// deliverers hold what is beyond the budget.
	var wg sync.WaitGroup
	ids := make([]string, 15)
	for i := range ids {
		wg.Go(func() {
			sub, err := f.submit(f.signers["district-9"], tokensBody("HACKED", district[i*20:(i+1)*20]))
			if err != nil {
				t.Errorf("sweep %d in its own topic: %v", i, err)
				return
			}
			ids[i] = sub.Status.ID
		})
	}
	wg.Wait()
	f.startWorker("w1")
	var held int64
	for _, id := range ids {
		if id != "" {
			held += f.waitState(id, api.StateCompleted).Counters.Held
		}
	}
	reached := f.fcm.sent("HACKED")
	for tok := range reached {
		if tok < "fcm-district-9a" || tok > "fcm-district-9b" {
			t.Errorf("%s, outside the key's topics, got the broadcast", tok)
		}
	}
	if len(reached) != 100 || held != 200 {
		t.Errorf("%d phones reached and %d held, want the budget of 100 reached and the other 200 held", len(reached), held)
	}

	// Once the budget is spent, a submission that needs more is refused
	// with when it may come back. Which devices were held depends on
	// which batches ran first, so take 20 of those.
	var unreached []api.Device
	for _, d := range district {
		if _, ok := reached[d.Token]; !ok && len(unreached) < 20 {
			unreached = append(unreached, d)
		}
	}
	_, err := f.submit(f.signers["district-9"], tokensBody("HACKED", unreached))
	var e *api.Error
	if !errors.As(err, &e) || e.Code != api.CodeReachBudgetExceeded || e.RetryAfter <= 0 {
		t.Fatalf("submission over the budget = %v, want %s with a Retry-After", err, api.CodeReachBudgetExceeded)
	}
	// Devices it already reached cost nothing.
	var again []api.Device
	for tok := range reached {
		again = append(again, api.Device{Platform: providers.FCM, Token: tok})
		if len(again) == 20 {
			break
		}
	}
	if _, err := f.submit(f.signers["district-9"], tokensBody("again", again)); err != nil {
		t.Fatalf("a broadcast to devices already reached: %v", err)
	}
}

// TestMaxAudienceIsEnforcedAtClaims lets someone who can write to Redis
// add devices to a small key's topic after its broadcast was accepted, and
// enqueue batches of them: the ledger's cap keeps the broadcast within the
// key's max_audience of 5.
func TestMaxAudienceIsEnforcedAtClaims(t *testing.T) {
	f := newFixture(t, nil)
	f.register("citizens", 3, 0)
	st, err := f.submit(f.signers["small"], broadcastBody(`{"topic":"citizens"}`, "capped"))
	if err != nil {
		t.Fatal(err)
	}
	extra := f.register("citizens-extra", 10, 0)
	var grow []api.ImportDevice
	for _, d := range extra {
		grow = append(grow, api.ImportDevice{Platform: string(d.Platform), Token: d.Token, Topics: []string{"citizens"}})
	}
	if err := f.svc.Registry().Import(context.Background(), grow); err != nil {
		t.Fatal(err)
	}
	f.startWorker("w1")
	f.waitState(st.Status.ID, api.StateCompleted)
	var toks []string
	for _, d := range extra {
		toks = append(toks, d.Token)
	}
	cl := asynq.NewClientFromRedisClient(f.rdb)
	if _, err := cl.Enqueue(deliverTask(t, st.Status.ID, 99, providers.FCM, toks...), asynq.Queue(QueueDeliver)); err != nil {
		t.Fatal(err)
	}
	// The planner stopped at 5 devices; the forged batch's 10 devices
	// are either among them (duplicates) or over the ledger's cap.
	var c api.Counters
	waitFor(t, "the forged batch to be handled", func() bool {
		s, _ := f.svc.Get(context.Background(), st.Status.ID)
		c = s.Counters
		return c.Sent+c.Capped+c.SkippedDuplicate >= 15
	})
	if n := len(f.fcm.sent("capped")); n != 5 || c.Sent != 5 || c.Capped == 0 {
		t.Errorf("%d phones got the broadcast (counters %+v), want its key's max_audience of 5 and the rest capped", n, c)
	}
}

// TestRegisterKeyScope checks what a register key scoped to district-9*
// may do to devices, and its quota of 50 devices.
func TestRegisterKeyScope(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	reg := f.keyringKey("reg-9")
	shared := api.Device{Platform: providers.FCM, Token: "fcm-shared"}
	if err := f.svc.Registry().Put(ctx, shared, []string{"citizens"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutDevice(ctx, reg, shared, []string{"citizens"}); api.CodeOf(err) != api.CodeTopicNotAllowed {
		t.Fatalf("subscribe to a topic outside the key's scope: %v, want %s", err, api.CodeTopicNotAllowed)
	}
	// PUT sets its own topics and leaves another owner's alone.
	got, err := f.svc.PutDevice(ctx, reg, shared, []string{"district-9a"})
	if err != nil || fmt.Sprint(got) != "[citizens district-9a]" {
		t.Fatalf("PutDevice = %v, %v; want citizens kept beside district-9a", got, err)
	}
	if got, err := f.svc.PutDevice(ctx, reg, shared, nil); err != nil || fmt.Sprint(got) != "[citizens]" {
		t.Fatalf("PutDevice with no topics = %v, %v; want only its own subscription dropped", got, err)
	}
	// DELETE removes only from its own topics, and cannot see a device
	// that is in none of them.
	if found, err := f.svc.DeleteDevice(ctx, reg, shared); err != nil || found {
		t.Fatalf("DeleteDevice of a device outside the key's topics = %t, %v; want not found", found, err)
	}
	if _, err := f.svc.PutDevice(ctx, reg, shared, []string{"district-9a"}); err != nil {
		t.Fatal(err)
	}
	if found, err := f.svc.DeleteDevice(ctx, reg, shared); err != nil || !found {
		t.Fatalf("DeleteDevice = %t, %v", found, err)
	}
	if ts, _ := f.svc.Registry().Topics(ctx, shared); fmt.Sprint(ts) != "[citizens]" {
		t.Errorf("after the scoped delete the device has %v, want citizens still", ts)
	}

	// The quota counts created devices; a refused import writes nothing.
	var devs []api.ImportDevice
	for i := range 60 {
		devs = append(devs, api.ImportDevice{Platform: "fcm", Token: fmt.Sprintf("fcm-q-%03d", i), Topics: []string{"district-9b"}})
	}
	if err := f.svc.ImportDevices(ctx, reg, devs); api.CodeOf(err) != api.CodeDeviceQuotaExceeded {
		t.Fatalf("import of 60 over a quota of 50: %v, want %s", err, api.CodeDeviceQuotaExceeded)
	}
	if n, _ := f.svc.Registry().Count(ctx, "district-9b"); n != 0 {
		t.Fatalf("the refused import registered %d devices", n)
	}
	if err := f.svc.ImportDevices(ctx, reg, devs[:49]); err != nil { // shared was created by Put, not by reg-9
		t.Fatal(err)
	}
	if err := f.svc.ImportDevices(ctx, reg, devs[49:]); api.CodeOf(err) != api.CodeDeviceQuotaExceeded {
		t.Fatalf("import past the quota: %v, want %s", err, api.CodeDeviceQuotaExceeded)
	}
	if err := f.svc.ImportDevices(ctx, reg, devs[:10]); err != nil {
		t.Fatalf("re-importing devices it created costs nothing: %v", err)
	}
}

// keyringKey returns a key of the fixture's keyring.
func (f *fixture) keyringKey(id string) *signing.Key {
	f.t.Helper()
	k, ok := f.keyring.Lookup(id)
	if !ok {
		f.t.Fatalf("no key %q", id)
	}
	return k
}
