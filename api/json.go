package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
)

// DecodeJSON decodes exactly one JSON value into v, refusing unknown
// fields and trailing data with an *Error (malformed_json or
// unknown_field). Every body the API reads goes through it.
func DecodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// encoding/json reports unknown fields only through its message.
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return Errorf(CodeUnknownField, "unknown field %s", name)
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return Errorf(CodeMalformedJSON, "field %q must be %s", typeErr.Field, typeErr.Type)
		}
		return Errorf(CodeMalformedJSON, "body is not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Errorf(CodeMalformedJSON, "body has data after the JSON value")
	}
	return nil
}

// decodeOptional is DecodeJSON for bodies that may be left out.
func decodeOptional(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return DecodeJSON(body, v)
}
