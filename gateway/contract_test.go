package gateway_test

import (
	"slices"
	"testing"

	"github.com/pushgate/pushgate/gateway/gatewaytest"
)

// TestEveryRouteIsDescribed checks that the routes the gateway serves are
// exactly the operations api/openapi.yaml describes.
func TestEveryRouteIsDescribed(t *testing.T) {
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
	}
	for _, op := range described {
		if !slices.Contains(served, op) {
			t.Errorf("api/openapi.yaml describes %s, which the gateway does not serve", op)
		}
	}
}
