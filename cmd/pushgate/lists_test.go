package main

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers"
)

// TestListCommands looks up what an operator looks up, against a live
// API: two broadcasts in different states (and the --state filter), the
// active kills, and the keyring with a key revoked through pushgate keys
// revoke.
func TestListCommands(t *testing.T) {
	gw := startGateway(t)
	ctx := context.Background()
	for i := range 3 {
		d := api.Device{Platform: providers.FCM, Token: "list-" + string(rune('a'+i))}
		if err := gw.Service.Registry().Put(ctx, d, []string{"citizens"}); err != nil {
			t.Fatal(err)
		}
	}
	must := func(key string, args ...string) clientRun {
		t.Helper()
		r := runAs(ctx, gw, key, args...)
		if r.code != 0 {
			t.Fatalf("pushgate %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		return r
	}
	idOf := func(r clientRun) string {
		t.Helper()
		m := broadcastIDRE.FindStringSubmatch(r.stdout)
		if m == nil || m[1] == "" {
			t.Fatalf("no broadcast id in %q", r.stdout)
		}
		return m[1]
	}
	queued := idOf(must(gatewaytest.Sender, "send", "--topic", "citizens", "--title", "Flood warning", "--body", "Avoid Manggarai."))
	cancelled := idOf(must(gatewaytest.Sender, "send", "--topic", "citizens", "--title", "Typo", "--body", "Avoid Manggarrai."))
	must(gatewaytest.Sender, "cancel", cancelled, "--reason", "typo")
	must(gatewaytest.Admin, "kill", "--scope", "topic:floods", "--reason", "bad text")
	must(gatewaytest.Admin, "keys", "revoke", gatewaytest.Doomed, "--reason", "leaked")

	// row finds the table row that starts with first.
	row := func(t *testing.T, out, first string) string {
		t.Helper()
		for line := range strings.Lines(out) {
			if strings.HasPrefix(line, first+" ") {
				return line
			}
		}
		t.Fatalf("no row for %s in:\n%s", first, out)
		return ""
	}

	t.Run("broadcasts list", func(t *testing.T) {
		out := must(gatewaytest.Admin, "broadcasts", "list").stdout
		if !strings.HasPrefix(out, "ID ") || !strings.Contains(out, "STATE") || !strings.Contains(out, "\n2 broadcasts, read in ") {
			t.Errorf("table:\n%s", out)
		}
		if r := row(t, out, queued); !regexp.MustCompile(`^` + queued + ` +queued +\S+ +sender +topic citizens +\d+ +0 +0 +0 +0 +Flood warning\n$`).MatchString(r) {
			t.Errorf("row of the queued broadcast: %q", r)
		}
		if r := row(t, out, cancelled); !regexp.MustCompile(`^` + cancelled + ` +cancelled +.* Typo\n$`).MatchString(r) {
			t.Errorf("row of the cancelled broadcast: %q", r)
		}
		// Newest first.
		if strings.Index(out, cancelled) > strings.Index(out, queued) {
			t.Errorf("the newer broadcast is listed after the older:\n%s", out)
		}
	})
	t.Run("broadcasts list --state", func(t *testing.T) {
		out := must(gatewaytest.Admin, "broadcasts", "list", "--state", api.StateCancelled).stdout
		if !strings.Contains(out, cancelled) || strings.Contains(out, queued) || !strings.Contains(out, "1 broadcast cancelled") {
			t.Errorf("--state cancelled:\n%s", out)
		}
		out = must(gatewaytest.Admin, "broadcasts", "list", "--state", api.StateCompleted).stdout
		if strings.Contains(out, cancelled) || strings.Contains(out, queued) || !strings.Contains(out, "0 broadcasts completed") {
			t.Errorf("--state completed:\n%s", out)
		}
	})
	t.Run("broadcasts list --limit", func(t *testing.T) {
		out := must(gatewaytest.Admin, "broadcasts", "list", "--limit", "1").stdout
		if !strings.Contains(out, cancelled) || strings.Contains(out, queued) || !strings.Contains(out, "there may be more") {
			t.Errorf("--limit 1:\n%s", out)
		}
	})
	t.Run("broadcasts list --json", func(t *testing.T) {
		out := must(gatewaytest.Admin, "broadcasts", "list", "--json").stdout
		var ids []string
		for line := range strings.Lines(out) {
			var st api.Status
			if err := json.Unmarshal([]byte(line), &st); err != nil {
				t.Fatalf("line %q is not a broadcast: %v", line, err)
			}
			ids = append(ids, st.ID+" "+st.State)
		}
		if want := []string{cancelled + " cancelled", queued + " queued"}; !slices.Equal(ids, want) {
			t.Errorf("--json lists %q, want %q", ids, want)
		}
	})
	t.Run("broadcasts list by a sender key", func(t *testing.T) {
		// Another broadcast key reads only its own: none here.
		out := must(gatewaytest.Wide, "broadcasts", "list").stdout
		if strings.Contains(out, queued) || !strings.Contains(out, "0 broadcasts") {
			t.Errorf("the wide key listed another key's broadcasts:\n%s", out)
		}
	})
	t.Run("pages follow their cursors", func(t *testing.T) {
		third := idOf(must(gatewaytest.Sender, "send", "--topic", "citizens", "--body", "third"))
		c, err := client.New(gw.URL, gw.Signers[gatewaytest.Admin])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, tt := range []struct {
			limit    int
			want     []string
			wantMore bool
		}{
			{10, []string{third, cancelled, queued}, false},
			{2, []string{third, cancelled}, true},
		} {
			listed, more, err := listBroadcastPages(ctx, c, "", tt.limit, 1)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, b := range listed {
				var st api.Status
				if err := json.Unmarshal(b, &st); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, st.ID)
			}
			if !slices.Equal(ids, tt.want) || more != tt.wantMore {
				t.Errorf("limit %d in pages of 1: %q (more %t), want %q (more %t)", tt.limit, ids, more, tt.want, tt.wantMore)
			}
		}
	})

	t.Run("kills list", func(t *testing.T) {
		out := must(gatewaytest.Admin, "kills", "list").stdout
		if r := row(t, out, "topic:floods"); !regexp.MustCompile(`^topic:floods +bad text +admin +\d{4}-\d\d-\d\dT`).MatchString(r) {
			t.Errorf("row of the topic kill: %q", r)
		}
		if r := row(t, out, api.KeyScope(gatewaytest.Doomed)); !strings.Contains(r, "leaked") {
			t.Errorf("row of the revoked key's kill: %q", r)
		}
		row(t, out, api.BroadcastScope(cancelled))
		if !strings.HasPrefix(out, "SCOPE ") || !strings.Contains(out, "\n3 active kills\n") {
			t.Errorf("table:\n%s", out)
		}
	})
	t.Run("kills list --json", func(t *testing.T) {
		out := must(gatewaytest.Admin, "kills", "list", "--json").stdout
		var scopes []string
		for line := range strings.Lines(out) {
			var k api.Kill
			if err := json.Unmarshal([]byte(line), &k); err != nil {
				t.Fatalf("line %q is not a kill: %v", line, err)
			}
			scopes = append(scopes, k.Scope)
		}
		slices.Sort(scopes)
		want := []string{api.BroadcastScope(cancelled), api.KeyScope(gatewaytest.Doomed), "topic:floods"}
		if !slices.Equal(scopes, want) {
			t.Errorf("--json lists %q, want %q", scopes, want)
		}
	})

	t.Run("keys list", func(t *testing.T) {
		out := must(gatewaytest.Admin, "keys", "list").stdout
		if r := row(t, out, gatewaytest.Doomed); !regexp.MustCompile(`REVOKED \d{4}-\d\d-\d\dT\S+ by admin: leaked\n$`).MatchString(r) {
			t.Errorf("row of the revoked key: %q", r)
		}
		if r := row(t, out, gatewaytest.Sender); !regexp.MustCompile(`^sender +sender +broadcast +citizens,district-\* +max_audience=100 reach=100/24h +[0-9a-f]{16} +no\n$`).MatchString(r) {
			t.Errorf("row of the sender key: %q", r)
		}
		if r := row(t, out, gatewaytest.Admin); !regexp.MustCompile(`^admin +ops-1 +admin +- +- +[0-9a-f]{16} +no\n$`).MatchString(r) {
			t.Errorf("row of the admin key: %q", r)
		}
		if !strings.Contains(out, "11 keys, 1 revoked") || strings.Contains(out, "PRIVATE") {
			t.Errorf("table:\n%s", out)
		}
	})
	t.Run("keys list --json", func(t *testing.T) {
		out := must(gatewaytest.Admin, "keys", "list", "--json").stdout
		revoked := map[string]bool{}
		for line := range strings.Lines(out) {
			var k api.KeyInfo
			if err := json.Unmarshal([]byte(line), &k); err != nil {
				t.Fatalf("line %q is not a key: %v", line, err)
			}
			revoked[k.ID] = k.Revoked
			if k.Revoked && (k.RevokedBy != gatewaytest.Admin || k.RevokedReason != "leaked" || k.RevokedAt.IsZero()) {
				t.Errorf("revoked key %+v", k)
			}
		}
		if len(revoked) != len(gw.Signers) || !revoked[gatewaytest.Doomed] || revoked[gatewaytest.Sender] {
			t.Errorf("--json: revoked %v", revoked)
		}
	})
	t.Run("keys list needs admin", func(t *testing.T) {
		r := runAs(ctx, gw, gatewaytest.Sender, "keys", "list")
		if r.code != 1 || r.stdout != "" || !strings.HasPrefix(r.stderr, "pushgate: forbidden: ") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("keys list by a sender key: exit %d, stdout %q, stderr %q; want 1 and one forbidden line", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("a bad --state is one line naming the states", func(t *testing.T) {
		r := runAs(ctx, gw, gatewaytest.Admin, "broadcasts", "list", "--state", "done")
		want := `pushgate: broadcasts list: --state "done": want one of ` + strings.Join(api.States(), ", ") + "\n"
		if r.code != 2 || r.stderr != want || r.stdout != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", r.code, r.stdout, r.stderr, want)
		}
	})
}

// TestKeysListThroughTheApp lists the keyring of a real API process,
// whose keyring a SIGHUP can replace, before and after pushgate keys
// revoke.
func TestKeysListThroughTheApp(t *testing.T) {
	e := newE2E(t, stack.Options{Devices: 1, Seed: 31}, app.Roles{API: true})
	ctx := context.Background()
	revoked := func() map[string]bool {
		t.Helper()
		r := runCLI(ctx, e, stack.KeyAdmin, "keys", "list", "--json")
		if r.code != 0 {
			t.Fatalf("keys list: exit %d: %s", r.code, r.stderr)
		}
		m := map[string]bool{}
		for line := range strings.Lines(r.stdout) {
			var k api.KeyInfo
			if err := json.Unmarshal([]byte(line), &k); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			m[k.ID] = k.Revoked
		}
		return m
	}
	id := func(name string) string { return e.st.Keys[name].ID }
	before := revoked()
	for _, name := range []string{stack.KeySender, stack.KeyAdmin, stack.KeyDistrict} {
		if r, ok := before[id(name)]; !ok || r {
			t.Errorf("before any revocation: key %s listed %t, revoked %t", id(name), ok, r)
		}
	}
	if _, ok := before[id(stack.KeyAttacker)]; ok {
		t.Errorf("the attacker's key, not in the keyring, is listed")
	}
	if r := runCLI(ctx, e, stack.KeyAdmin, "keys", "revoke", id(stack.KeyDistrict), "--reason", "rotated"); r.code != 0 {
		t.Fatalf("keys revoke: exit %d: %s", r.code, r.stderr)
	}
	after := revoked()
	if !after[id(stack.KeyDistrict)] || after[id(stack.KeySender)] || len(after) != len(before) {
		t.Errorf("after revoking %s: %v", id(stack.KeyDistrict), after)
	}
}
