package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"reflect"
	"strconv"
	"strings"
)

// DecodeJSON decodes exactly one JSON value into v, refusing unknown
// fields, trailing data and ambiguous objects with an *Error
// (malformed_json, unknown_field or duplicate_key). Every body the API
// reads goes through it, at the API and again in the worker.
//
// A body is ambiguous when an object repeats a key, or names a field in
// another case than its own: encoding/json takes the last duplicate and
// matches field names case-insensitively, while other parsers (an
// approver's tool, a log reader) take the first or none, so two readers
// of the same signed bytes would see two messages.
func DecodeJSON(body []byte, v any) error {
	if err := checkKeys(body, reflect.TypeOf(v)); err != nil {
		return err
	}
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

// maxDepth bounds the nesting checkKeys follows; no API body comes close.
const maxDepth = 32

// keyChecker walks one JSON value token by token beside the Go type it
// decodes into.
type keyChecker struct {
	dec   *json.Decoder
	depth int
}

// checkKeys refuses a body in which an object repeats a key, or where an
// object decoded into a struct has a key that is not exactly one of the
// struct's JSON field names. Malformed JSON passes: Decode reports it.
func checkKeys(body []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	c := &keyChecker{dec: dec}
	err := c.value(t, "")
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// value checks the next value, decoded into t (nil: any JSON), at path.
func (c *keyChecker) value(t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := c.dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > maxDepth {
		return Errorf(CodeMalformedJSON, "the body nests deeper than %d levels", maxDepth)
	}
	switch d {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && t != rawMessage {
			elem = t.Elem()
		}
		for i := 0; c.dec.More(); i++ {
			if err := c.value(elem, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case '{':
		if err := c.object(t, path); err != nil {
			return err
		}
	}
	_, err = c.dec.Token() // the closing delimiter
	return err
}

// object checks the members of an object whose opening brace was read.
func (c *keyChecker) object(t reflect.Type, path string) error {
	var fields map[string]reflect.Type
	var elem reflect.Type
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			fields = structFields(t)
		case reflect.Map:
			elem = t.Elem()
		}
	}
	seen := map[string]bool{}
	for c.dec.More() {
		tok, err := c.dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		at := memberPath(path, key, fields != nil)
		if seen[key] {
			return Errorf(CodeDuplicateKey, "the body repeats the key %s", at)
		}
		seen[key] = true
		next := elem
		if fields != nil {
			ft, ok := fields[key]
			if !ok {
				return Errorf(CodeUnknownField, "unknown field %s", at)
			}
			next = ft
		}
		if err := c.value(next, at); err != nil {
			return err
		}
	}
	return nil
}

// memberPath names a member for an error: audience.tokens[0].token for a
// field, message.data["k"] for a map key or a key that is no identifier.
func memberPath(path, key string, field bool) string {
	if !field || !identifier(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func identifier(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

var rawMessage = reflect.TypeFor[json.RawMessage]()

// structFields maps the JSON names of a struct's fields to their types,
// as encoding/json names them (the tag's name, else the Go name); a
// json.RawMessage field maps to nil, any JSON.
func structFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			maps.Copy(m, structFields(f.Type)) // promoted, as encoding/json does
			continue
		}
		if name == "" {
			name = f.Name
		}
		ft := f.Type
		if ft == rawMessage {
			ft = nil
		}
		m[name] = ft
	}
	return m
}
