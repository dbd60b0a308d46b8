package gateway_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
)

// listIDs lists the broadcasts key reads, following every page.
func listIDs(t *testing.T, env *gatewaytest.Env, key, query string) []string {
	t.Helper()
	var ids []string
	after := ""
	for range 100 {
		path := "/v1/broadcasts?limit=2" + query
		if after != "" {
			path += "&after=" + after
		}
		r := call(t, env, key, "GET", path, "")
		if r.status != http.StatusOK {
			t.Fatalf("%s lists: %d %s", key, r.status, r.body)
		}
		var page api.ListPage
		r.decode(t, &page)
		for _, st := range page.Broadcasts {
			ids = append(ids, st.ID)
		}
		if page.Next == "" {
			return ids
		}
		after = page.Next
	}
	t.Fatal("hung: the list has no last page")
	return nil
}

// TestBroadcastsVisibleOnlyToSubmitterAdminsAndApprovers lists and reads
// broadcasts as every kind of key: a sender sees its own, a register key
// none, admins and approvers (who approve them) all. Another key's
// broadcast reads and cancels as one that does not exist.
func TestBroadcastsVisibleOnlyToSubmitterAdminsAndApprovers(t *testing.T) {
	env := gatewaytest.Start(t)
	register(t, env, "citizens", 3)
	var mine []string // the sender's, newest first
	for range 3 {
		mine = slices.Insert(mine, 0, submit(t, env, gatewaytest.Sender, broadcastBody(`{"topic":"citizens"}`)))
	}
	other := submit(t, env, gatewaytest.Small, `{"audience":`+tokensJSON(2)+`,"message":{"title":"Small's secret title","body":"b"}}`)
	all := append([]string{other}, mine...)

	lists := []struct {
		key  string
		want []string
	}{
		{gatewaytest.Sender, mine},
		{gatewaytest.Small, []string{other}},
		{gatewaytest.Registrar, nil},
		{gatewaytest.Wide, nil},
		{gatewaytest.Admin, all},
		{gatewaytest.Approver, all},
	}
	for _, tt := range lists {
		if got := listIDs(t, env, tt.key, ""); !slices.Equal(got, tt.want) {
			t.Errorf("%s lists %v, want %v", tt.key, got, tt.want)
		}
		if got := listIDs(t, env, tt.key, "&state=queued"); !slices.Equal(got, tt.want) {
			t.Errorf("%s lists queued %v, want %v", tt.key, got, tt.want)
		}
	}

	unknown := call(t, env, gatewaytest.Sender, "GET", "/v1/broadcasts/bdoesnotexist", "")
	reads := []struct {
		key, id string
		want    int
	}{
		{gatewaytest.Small, other, http.StatusOK},
		{gatewaytest.Sender, mine[0], http.StatusOK},
		{gatewaytest.Sender, other, http.StatusNotFound},
		{gatewaytest.Registrar, mine[0], http.StatusNotFound},
		{gatewaytest.Wide, other, http.StatusNotFound},
		{gatewaytest.Admin, other, http.StatusOK},
		{gatewaytest.Approver, other, http.StatusOK},
	}
	for _, tt := range reads {
		r := call(t, env, tt.key, "GET", api.BroadcastPath(tt.id), "")
		if r.status != tt.want {
			t.Errorf("%s reads %s: %d %s, want %d", tt.key, tt.id, r.status, r.body, tt.want)
			continue
		}
		if tt.want == http.StatusOK {
			var st api.Status
			if r.decode(t, &st); st.ID != tt.id {
				t.Errorf("%s reads %s: got %s", tt.key, tt.id, st.ID)
			}
			continue
		}
		// Word for word the answer for an id that does not exist.
		p, up := r.problem(t), unknown.problem(t)
		if p.Code != up.Code || p.Detail != strings.ReplaceAll(up.Detail, "bdoesnotexist", tt.id) {
			t.Errorf("%s reads %s: %+v; an unknown id answers %+v", tt.key, tt.id, p, up)
		}
		if strings.Contains(string(r.body), "secret") || strings.Contains(string(r.body), gatewaytest.Small) {
			t.Errorf("%s reads %s: the answer tells of the broadcast: %s", tt.key, tt.id, r.body)
		}
	}

	// A cancel by a key that may not read the broadcast is not found
	// either, and changes nothing; an approver reads it but may not cancel.
	cancels := []struct {
		key  string
		want int
		code string
	}{
		{gatewaytest.Sender, http.StatusNotFound, api.CodeNotFound},
		{gatewaytest.Registrar, http.StatusNotFound, api.CodeNotFound},
		{gatewaytest.Approver, http.StatusForbidden, api.CodeForbidden},
	}
	for _, tt := range cancels {
		r := call(t, env, tt.key, "POST", api.CancelPath(other), `{"reason":"not mine"}`)
		if r.status != tt.want || r.problem(t).Code != tt.code {
			t.Errorf("%s cancels %s: %d %s, want %d %s", tt.key, other, r.status, r.body, tt.want, tt.code)
		}
	}
	if st, err := env.Service.Get(context.Background(), other); err != nil || st.State != api.StateQueued {
		t.Errorf("after the refused cancels the broadcast is %+v, %v; want queued", st, err)
	}
}

// TestSenderIndexIsNotTrusted lists, for a sender, only broadcasts whose
// records name it, whatever Redis's index of its broadcasts holds.
func TestSenderIndexIsNotTrusted(t *testing.T) {
	env := gatewaytest.Start(t)
	register(t, env, "citizens", 3)
	own := submit(t, env, gatewaytest.Sender, broadcastBody(`{"topic":"citizens"}`))
	other := submit(t, env, gatewaytest.Small, `{"audience":`+tokensJSON(2)+`,"message":{"title":"t","body":"b"}}`)
	st, err := env.Service.Get(context.Background(), other)
	if err != nil {
		t.Fatal(err)
	}
	// Someone with write access to Redis files the other key's broadcast
	// under the sender, and a broadcast whose record is gone.
	z := []redis.Z{{Score: float64(st.CreatedAt.UnixMilli()), Member: other}, {Score: 1, Member: "bgone"}}
	if err := env.Redis.ZAdd(context.Background(), env.Keys.SenderIndex(gatewaytest.Sender), z...).Err(); err != nil {
		t.Fatal(err)
	}
	if got := listIDs(t, env, gatewaytest.Sender, ""); !slices.Equal(got, []string{own}) {
		t.Errorf("sender lists %v, want only its own %s", got, own)
	}
	if n, _ := env.Redis.ZScore(context.Background(), env.Keys.SenderIndex(gatewaytest.Sender), "bgone").Result(); n != 0 {
		t.Error("the entry of a gone record stays in the index after a list passed it")
	}
}
