package api

import _ "embed"

//go:embed openapi.yaml
var openAPI string

// OpenAPI returns the OpenAPI 3.1 description of the whole v1 API
// (api/openapi.yaml): every route with its parameters, bodies, answers and
// problem codes, and the signature profile its requests are signed under.
// The gateway's tests check every exchange they make against it, so it
// describes what the gateway does (docs/ARCHITECTURE.md, "The API
// contract: api/openapi.yaml"). Each call returns a fresh copy.
func OpenAPI() []byte { return []byte(openAPI) }
