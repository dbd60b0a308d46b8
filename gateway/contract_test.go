package gateway_test

import (
	"slices"
	"testing"

	"github.com/pushgate/pushgate/gateway/gatewaytest"
)

// TestEveryRouteIsDescribed checks that the routes the gateway serves are
// exactly the operations api/openapi.yaml describes.
func TestEveryRouteIsDescribed(t *testing.T) {
	// describedAhead are operations the document describes before the
	// gateway serves them, each with why. The test fails once one is
	// served, so that its entry goes with the merge that adds the route.
	describedAhead := map[string]string{}
	env := gatewaytest.Start(t)
	c, err := gatewaytest.LoadContract()
	if err != nil {
		t.Fatal(err)
	}
	served := env.Gateway.Routes()
	described := c.Operations()
	if len(served) == 0 || len(described) == 0 {
		t.Fatalf("served %d routes, described %d operations", len(served), len(described))
	}
	for _, r := range served {
		if !slices.Contains(described, r) {
			t.Errorf("the gateway serves %s, which api/openapi.yaml does not describe", r)
		}
		if why, ok := describedAhead[r]; ok {
			t.Errorf("%s is served now: remove it from describedAhead (%s)", r, why)
		}
	}
	for _, op := range described {
		if _, ahead := describedAhead[op]; !ahead && !slices.Contains(served, op) {
			t.Errorf("api/openapi.yaml describes %s, which the gateway does not serve", op)
		}
	}
}
