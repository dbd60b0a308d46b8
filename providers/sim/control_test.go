package sim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"

	"github.com/pushgate/pushgate/providers"
)

func ctl(t *testing.T, s *Sim, method, path, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, s.ControlURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

func TestControlAPI(t *testing.T) {
	s := newSim(t, Config{})
	phone := apnsToken(1)
	s.AddDevice(providers.APNs, phone)
	c := apnsClient(t, s)
	push := func(collapse, body string) {
		t.Helper()
		res, err := c.Push(&apns2.Notification{DeviceToken: phone, Topic: s.Topic(), CollapseID: collapse,
			Payload: payload.NewPayload().AlertTitle("T").AlertBody(body)})
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("push: %v %+v", err, res)
		}
	}
	push("a", "one")
	mark := time.Now()
	push("a", "two")
	push("b", "three")

	var stats struct {
		Stats
		DeliveriesAfter *int `json:"deliveries_after"`
	}
	if code := ctl(t, s, "GET", "/sim/stats", "", &stats); code != 200 || stats.Deliveries != 3 || stats.DeliveriesAfter != nil {
		t.Fatalf("stats %d %+v", code, stats)
	}
	if stats.Requests[providers.APNs][200] != 3 || stats.Connections[providers.APNs] != 1 {
		t.Fatalf("stats requests %v connections %v", stats.Requests, stats.Connections)
	}
	q := "?after=" + url.QueryEscape(mark.Format(time.RFC3339Nano))
	ctl(t, s, "GET", "/sim/stats"+q, "", &stats)
	if stats.DeliveriesAfter == nil || *stats.DeliveriesAfter != 2 {
		t.Fatalf("deliveries after mark: %v", stats.DeliveriesAfter)
	}
	ctl(t, s, "GET", "/sim/stats"+q+"&collapse=b", "", &stats)
	if *stats.DeliveriesAfter != 1 {
		t.Fatalf("deliveries after mark under b: %d", *stats.DeliveriesAfter)
	}
	if code := ctl(t, s, "GET", "/sim/stats?after=yesterday", "", nil); code != 400 {
		t.Fatalf("bad after: %d", code)
	}

	var dev DeviceView
	if code := ctl(t, s, "GET", "/sim/devices/"+phone, "", &dev); code != 200 || dev.Deliveries != 3 || len(dev.Screen) != 2 || len(dev.Log) != 3 {
		t.Fatalf("device %d %+v", code, dev)
	}
	if code := ctl(t, s, "GET", "/sim/devices/nope", "", nil); code != 404 {
		t.Fatalf("unknown device: %d", code)
	}

	var showing struct {
		Phones    int     `json:"phones"`
		ByContent []Shown `json:"by_content"`
	}
	ctl(t, s, "GET", "/sim/showing?collapse=a", "", &showing)
	if showing.Phones != 1 || showing.ByContent[0].Body != "two" {
		t.Fatalf("showing %+v", showing)
	}
	if code := ctl(t, s, "GET", "/sim/showing", "", nil); code != 400 {
		t.Fatalf("showing without collapse: %d", code)
	}

	var ds []Delivery
	ctl(t, s, "GET", "/sim/deliveries?collapse=a&limit=1", "", &ds)
	if len(ds) != 1 || ds[0].Body != "two" {
		t.Fatalf("deliveries %+v", ds)
	}

	if code := ctl(t, s, "POST", "/sim/devices/"+phone+"/online", `{"online":false}`, &dev); code != 200 || dev.Online {
		t.Fatalf("offline: %d %+v", code, dev)
	}
	for _, bad := range []string{``, `{}`, `{"online":"no"}`, `{"online":true,"x":1}`} {
		if code := ctl(t, s, "POST", "/sim/devices/"+phone+"/online", bad, nil); code != 400 {
			t.Fatalf("online body %q: %d", bad, code)
		}
	}
	if code := ctl(t, s, "POST", "/sim/devices/nope/online", `{"online":true}`, nil); code != 404 {
		t.Fatalf("online unknown: %d", code)
	}

	var f Faults
	if code := ctl(t, s, "PUT", "/sim/faults", `{"latency":"2ms","prefixes":{"zz-":"internal"}}`, &f); code != 200 || f.Latency != 2*time.Millisecond {
		t.Fatalf("faults %d %+v", code, f)
	}
	if s.Faults().Prefixes["zz-"] != OutcomeInternal {
		t.Fatalf("faults not applied: %+v", s.Faults())
	}
	for _, bad := range []string{`{"latency":"soon"}`, `{"error_rate":3}`, `{"prefixes":{"a":"boom"}}`, `[`} {
		if code := ctl(t, s, "PUT", "/sim/faults", bad, nil); code != 400 {
			t.Fatalf("faults %s: %d", bad, code)
		}
	}
	ctl(t, s, "GET", "/sim/faults", "", &f)
	if f.Latency != 2*time.Millisecond {
		t.Fatalf("GET faults %+v", f)
	}

	if code := ctl(t, s, "POST", "/sim/reset", "", nil); code != 200 {
		t.Fatalf("reset: %d", code)
	}
	ctl(t, s, "GET", "/sim/devices/"+phone, "", &dev)
	st := s.Stats()
	if st.Deliveries != 0 || len(st.Requests[providers.APNs]) != 0 || !dev.Online || len(dev.Screen) != 0 || st.Phones[providers.APNs] != 1 {
		t.Fatalf("after reset: %+v %+v", st, dev)
	}
}
