package api_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/pushgate/pushgate/api"
)

// TestOpenAPIIsValid parses api/openapi.yaml as an OpenAPI 3.1 document,
// builds its model (every $ref resolves) and validates it against the
// OpenAPI 3.1 schema.
func TestOpenAPIIsValid(t *testing.T) {
	doc, err := libopenapi.NewDocument(api.OpenAPI())
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Errorf("openapi version %q, want 3.1.0", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("build the model: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("%s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  at %s (%s): %s", se.FieldPath, se.KeywordLocation, se.Reason)
			}
		}
	}
}

// TestOpenAPIProblemCodes checks that the problem code enum lists exactly
// the codes of api.StatusOf's table, so that a new code cannot be added to
// one and not the other.
func TestOpenAPIProblemCodes(t *testing.T) {
	doc, err := libopenapi.NewDocument(api.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	problem := model.Model.Components.Schemas.GetOrZero("Problem")
	if problem == nil {
		t.Fatal("no Problem schema")
	}
	code := problem.Schema().Properties.GetOrZero("code")
	if code == nil {
		t.Fatal("Problem has no code property")
	}
	var inSpec []string
	for _, n := range code.Schema().Enum {
		inSpec = append(inSpec, n.Value)
	}
	slices.Sort(inSpec)
	want := api.Codes()
	slices.Sort(want)
	if !slices.Equal(inSpec, want) {
		t.Errorf("the Problem code enum differs from api.Codes():\nonly in the spec: %s\nonly in api: %s",
			strings.Join(minus(inSpec, want), " "), strings.Join(minus(want, inSpec), " "))
	}
}

// minus lists the elements of a that b lacks.
func minus(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}
