package api

import (
	"strings"
	"testing"
)

func TestCanonicalPath(t *testing.T) {
	tests := []struct {
		pattern, give string
		want          []string // nil: refused
	}{
		{PatternRecall, "/v1/broadcasts/b01/recall", []string{"b01"}},
		{PatternRecall, "/v1/broadcasts/b01/%72ecall", nil},
		{PatternRecall, "/v1/%62roadcasts/b01/recall", nil},
		{PatternRecall, "/v1/broadcasts/%62%30%31/recall", nil},
		{PatternRecall, "/v1/broadcasts/b01/recall/", nil},
		{PatternRecall, "/v1/broadcasts//recall", nil},
		{PatternRecall, "/v1/broadcasts/b01//recall", nil},
		{PatternRecall, "/v1/broadcasts/./recall", nil},
		{PatternRecall, "/v1/broadcasts/%2E/recall", nil},
		{PatternBroadcast, "/v1/broadcasts/b01", []string{"b01"}},
		{PatternDevice, "/v1/devices/fcm/tok:en_1-2", []string{"fcm", "tok:en_1-2"}},
		{PatternDevice, "/v1/devices/fcm/a%3Fb", []string{"fcm", "a?b"}},
		{PatternDevice, "/v1/devices/fcm/a%3fb", nil}, // lowercase hex
		{PatternDevice, "/v1/devices/fcm/a%2Fb", []string{"fcm", "a/b"}},
		{PatternDevice, "/v1/devices/fcm/a%ZZ", nil},
		{PatternDevice, "/v1/devices/fcm", nil},
		{PathBroadcasts, "/v1/broadcasts", []string(nil)},
		{PathBroadcasts, "/v1/%62roadcasts", nil},
		{PathBroadcasts, "/v1/broadcasts/", nil},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, ok := CanonicalPath(tt.pattern, tt.give)
			wantOK := tt.want != nil || tt.give == tt.pattern
			if ok != wantOK || strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("CanonicalPath(%q, %q) = %q, %t; want %q, %t", tt.pattern, tt.give, got, ok, tt.want, wantOK)
			}
			if ok && ExpandPath(tt.pattern, got...) != tt.give {
				t.Errorf("ExpandPath does not spell %q back", tt.give)
			}
		})
	}
}

// TestBuildersAreCanonical checks that every path builder spells a path
// CanonicalPath accepts for its pattern, whatever the id holds: the paths
// clients send, the gateway accepts and the workers expect are one.
func TestBuildersAreCanonical(t *testing.T) {
	for _, id := range []string{"b01", "a b", "a/b", "a%b", "é", "...", "x?y#z"} {
		for _, c := range []struct {
			pattern string
			path    string
		}{
			{PatternBroadcast, BroadcastPath(id)},
			{PatternCancel, CancelPath(id)},
			{PatternRecall, RecallPath(id)},
			{PatternApprovals, ApprovalsPath(id)},
			{PatternActionApprovals, ActionApprovalsPath(id)},
			{PatternRevoke, RevokePath(id)},
			{PatternDevice, DevicePath(FCM, id)},
		} {
			v, ok := CanonicalPath(c.pattern, c.path)
			if !ok || v[len(v)-1] != id {
				t.Errorf("CanonicalPath(%q, %q) = %q, %t; want the id %q", c.pattern, c.path, v, ok, id)
			}
		}
	}
}

func TestCleanPath(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"/", true},
		{"/v1/broadcasts", true},
		{"/v1/%62roadcasts", true}, // clean; only a route's pattern says how to spell it
		{"/v1//broadcasts", false},
		{"/v1/broadcasts/", false},
		{"/v1/./broadcasts", false},
		{"/v1/../v1/broadcasts", false},
		{"/v1/%2e%2e/broadcasts", false},
		{"v1/broadcasts", false},
	}
	for _, tt := range tests {
		if got := CleanPath(tt.give); got != tt.want {
			t.Errorf("CleanPath(%q) = %t, want %t", tt.give, got, tt.want)
		}
	}
}
