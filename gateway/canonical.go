package gateway

import (
	"net/http"
	"strings"

	"github.com/pushgate/pushgate/api"
)

// canonical refuses a request whose path is not spelled exactly as the
// API spells the route it matched (api.CanonicalPath), or, when it matched
// none, a path that is not even clean (api.CleanPath): ServeMux routes
// "/v1/%62roadcasts" to POST /v1/broadcasts, but a signature covers the
// path as sent, and the workers and the control log accept only the
// canonical one, so anything else would be accepted here and refused
// there (docs/ARCHITECTURE.md, "Canonical request paths"). route is the
// pattern ServeMux chose, "" for none. The check needs no signature: it
// reads nothing but the path.
func canonical(r *http.Request, route string) error {
	escaped := r.URL.EscapedPath()
	if route == "" {
		if !api.CleanPath(escaped) {
			return api.Errorf(api.CodeNonCanonicalPath, "the path has an empty or dot segment or a trailing slash")
		}
		return nil
	}
	_, pattern, _ := strings.Cut(route, " ")
	if _, ok := api.CanonicalPath(pattern, escaped); !ok {
		return api.Errorf(api.CodeNonCanonicalPath,
			"the path is not spelled as the API spells %s: percent-encode only what url.PathEscape encodes, in uppercase hex", pattern)
	}
	return nil
}
