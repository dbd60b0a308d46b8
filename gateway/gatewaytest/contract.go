package gatewaytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"

	"github.com/pushgate/pushgate/api"
)

// Contract checks HTTP exchanges against the API's OpenAPI description
// (api.OpenAPI): the answer's status, headers and body always; the request
// when the gateway accepted it. It is safe for concurrent use.
type Contract struct {
	doc libopenapi.Document
	v   validator.Validator
	ops []string
}

// sharedContract builds the Contract of api.OpenAPI once per process:
// parsing the document and compiling its schemas costs far more than
// checking one exchange, and every test checks against the same document.
var sharedContract = sync.OnceValues(func() (*Contract, error) { return NewContract(api.OpenAPI()) })

// LoadContract returns the Contract of api.OpenAPI, built on first use.
func LoadContract() (*Contract, error) { return sharedContract() }

// NewContract parses an OpenAPI document and builds its validator.
func NewContract(spec []byte) (*Contract, error) {
	doc, err := libopenapi.NewDocument(spec)
	if err != nil {
		return nil, fmt.Errorf("openapi: parse: %w", err)
	}
	v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
	if len(errs) > 0 {
		return nil, fmt.Errorf("openapi: build: %w", errors.Join(errs...))
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("openapi: build: %w", err)
	}
	c := &Contract{doc: doc, v: v}
	for path, item := range model.Model.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().KeysFromOldest() {
			c.ops = append(c.ops, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(c.ops)
	return c, nil
}

// Operations lists every operation the document describes as ServeMux
// spells a pattern: "GET /v1/broadcasts/{id}", sorted.
func (c *Contract) Operations() []string { return slices.Clone(c.ops) }

// Check returns the ways one exchange departs from the document, each
// naming the method, the path, the status and what the validator found;
// none when it conforms. reqBody is the request body as the server read
// it. The request is checked only when the status is 2xx: a refusal of a
// request the document calls invalid is the API doing its job. A request
// for a route the document does not describe must be answered with a
// problem (404, 405, or 400 for a path not spelled canonically).
func (c *Contract) Check(r *http.Request, reqBody []byte, status int, header http.Header, body []byte) []string {
	where := fmt.Sprintf("%s %s -> %d", r.Method, shownPath(r), status)
	resp := &http.Response{
		StatusCode: status,
		Header:     header,
		Body:       io.NopCloser(bytes.NewReader(body)),
		Request:    r,
	}
	var out []string
	_, errs := c.v.ValidateHttpResponse(r, resp)
	if unrouted(errs) {
		switch status {
		case http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed:
			if p := problemAnswer(status, header, body); p != "" {
				out = append(out, where+": a route the document does not describe: "+p)
			}
		default:
			out = append(out, where+": a route the document does not describe, answered other than 404, 405 or 400")
		}
		return out
	}
	for _, d := range describe(errs) {
		out = append(out, where+": answer: "+d)
	}
	if status >= 400 {
		// The schema admits any code with any status; api.StatusOf
		// maps each code to one.
		if p := problemAnswer(status, header, body); p != "" {
			out = append(out, where+": answer: "+p)
		}
	}
	if status >= 200 && status < 300 {
		req := r.Clone(r.Context())
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
		req.ContentLength = int64(len(reqBody))
		if _, errs := c.v.ValidateHttpRequestSync(req); len(errs) > 0 {
			for _, d := range describe(errs) {
				out = append(out, where+": accepted a request the document refuses: "+d)
			}
		}
	}
	return out
}

// shownPath is the request's path and query for a finding, with a device
// token left out: findings end up in test logs, and tokens never do.
func shownPath(r *http.Request) string {
	if v, ok := api.CanonicalPath(api.PatternDevice, r.URL.EscapedPath()); ok {
		return "/v1/devices/" + url.PathEscape(v[0]) + "/{token}"
	}
	return r.URL.RequestURI()
}

// unrouted reports whether the validator found no operation for the
// request.
func unrouted(errs []*verrors.ValidationError) bool {
	for _, e := range errs {
		if e.ValidationType == helpers.PathValidation &&
			(e.ValidationSubType == helpers.ValidationMissing || e.ValidationSubType == helpers.ValidationMissingOperation) {
			return true
		}
	}
	return false
}

// problemAnswer describes what is wrong with a refusal, or returns "": it
// must be a problem document whose code api.StatusOf maps to the answer's
// status, with that status and the code's type URI.
func problemAnswer(status int, header http.Header, body []byte) string {
	if mt, _, _ := mime.ParseMediaType(header.Get("Content-Type")); mt != api.ProblemContentType {
		return fmt.Sprintf("Content-Type %q, want %s", header.Get("Content-Type"), api.ProblemContentType)
	}
	var p api.Problem
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Sprintf("the problem does not decode: %v", err)
	}
	want, _, ok := api.StatusOf(p.Code)
	switch {
	case !ok:
		return fmt.Sprintf("problem code %q is not in api.StatusOf's table", p.Code)
	case want != status || p.Status != status:
		return fmt.Sprintf("problem %q (status %d in the document, %d in the table) in a %d answer", p.Code, p.Status, want, status)
	case p.Type != api.ProblemTypeBase+p.Code:
		return fmt.Sprintf("problem %q has type %q", p.Code, p.Type)
	}
	return ""
}

// describe renders the validator's findings, each with the schema
// failures under it.
func describe(errs []*verrors.ValidationError) []string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		var b strings.Builder
		b.WriteString(e.Message)
		if e.Reason != "" && e.Reason != e.Message {
			b.WriteString(": " + e.Reason)
		}
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "; at %q: %s", f.FieldPath, f.Reason)
		}
		out = append(out, b.String())
	}
	return out
}

// CheckContract wraps h so that every exchange it serves is checked
// against api.OpenAPI (Contract.Check). The findings fail tb at its
// cleanup, so wrap before whatever serves h registers its own cleanup:
// the server then stops first, and nothing is checked after the test is
// done. h sees the request and writes its answer as it would unwrapped;
// the body it reads and the answer it writes are copied for the check.
func CheckContract(tb testing.TB, h http.Handler) http.Handler {
	tb.Helper()
	c, err := LoadContract()
	if err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	var mu sync.Mutex
	var found []string       // distinct findings, in the order seen
	seen := map[string]int{} // how often each was seen
	tb.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for i, f := range found {
			if i == maxReported {
				tb.Errorf("the API departs from api/openapi.yaml in %d more ways", len(found)-i)
				break
			}
			times := ""
			if n := seen[f]; n > 1 {
				times = fmt.Sprintf(" (%d times)", n)
			}
			tb.Errorf("the API departs from api/openapi.yaml%s: %s", times, f)
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			// ServeMux answers HEAD with the GET route; the document
			// describes GET.
			h.ServeHTTP(w, r)
			return
		}
		in := &copyingBody{ReadCloser: r.Body}
		r.Body = in
		out := &copyingWriter{ResponseWriter: w}
		h.ServeHTTP(out, r)
		header := out.header
		if header == nil {
			header = w.Header().Clone()
		}
		if fs := c.Check(r, in.buf.Bytes(), out.status(), header, out.buf.Bytes()); len(fs) > 0 {
			mu.Lock()
			for _, f := range fs {
				if seen[f] == 0 {
					found = append(found, f)
				}
				seen[f]++
			}
			mu.Unlock()
		}
	})
}

// maxReported bounds the findings CheckContract reports for one test: a
// test that polls a status repeats the same departure many times.
const maxReported = 20

// copyingBody keeps a copy of what the handler reads of a request body.
type copyingBody struct {
	io.ReadCloser
	buf bytes.Buffer
}

func (b *copyingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.buf.Write(p[:n])
	return n, err
}

// copyingWriter keeps a copy of an answer: its status, its header as it
// was sent, and its body.
type copyingWriter struct {
	http.ResponseWriter
	code   int
	header http.Header
	buf    bytes.Buffer
}

func (w *copyingWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
		w.header = w.ResponseWriter.Header().Clone()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *copyingWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.buf.Write(b)
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection, as the
// gateway's body deadlines need.
func (w *copyingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *copyingWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
