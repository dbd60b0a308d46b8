// Package client is a Go client of pushgate's v1 HTTP API: one typed method
// per route, every request signed with the caller's Ed25519 key under the
// RFC 9421 profile the gateway verifies (see package signing), typed
// results from package api, and error answers returned as *api.Problem.
//
// A backend submits a broadcast and follows it like this:
//
//	c, err := client.New("https://push.internal", &signing.Signer{KeyID: "city-alerts", Key: key})
//	sub, err := c.Submit(ctx, &api.BroadcastRequest{Audience: api.Audience{Topic: "citizens"},
//		Message: api.MessageSpec{Title: "Peringatan banjir", Body: "Hindari area Manggarai."}})
//	st, err := c.Wait(ctx, sub.ID, time.Second, nil)
//
// The client holds no state between calls beyond its HTTP connections; it is
// safe for concurrent use. It imports no provider SDK and no Redis client.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

// maxAnswerBytes bounds what the client reads of an answer.
const maxAnswerBytes = 16 << 20

// Client calls one gateway with one key.
type Client struct {
	base   *url.URL
	signer *signing.Signer
	http   *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc instead of its
// own (a client with a one-minute timeout on a clone of
// http.DefaultTransport).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// New returns a client of the gateway at baseURL (an http or https URL,
// possibly with a path prefix) that signs with signer.
func New(baseURL string, signer *signing.Signer, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" {
		return nil, fmt.Errorf("client: %q is not an http or https URL", baseURL)
	}
	if signer == nil || signer.KeyID == "" || len(signer.Key) == 0 {
		return nil, errors.New("client: a signer with a key id and a key is required")
	}
	// Paths are appended to the base as text, already escaped.
	u.Path, u.RawPath = strings.TrimSuffix(u.Path, "/"), strings.TrimSuffix(u.RawPath, "/")
	u.Fragment, u.RawFragment = "", ""
	c := &Client{base: u, signer: signer}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		// A kill that waits for every worker answers within seconds; the
		// bound only keeps a stuck connection from hanging the caller.
		c.http = &http.Client{Transport: transport, Timeout: time.Minute}
	}
	return c, nil
}

// KeyID is the id of the key the client signs with.
func (c *Client) KeyID() string { return c.signer.KeyID }

// URL returns the absolute URL of an API path (already escaped).
func (c *Client) URL(path string) string { return c.base.String() + path }

// Close releases the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Signed is a request signed once. Sending it again sends the same bytes
// with the same signature, as someone who captured it would: the gateway
// refuses the replay.
type Signed struct {
	c    *Client
	req  *http.Request
	body []byte
}

// Sign builds and signs a request. in, when not nil, is its JSON body.
func (c *Client) Sign(ctx context.Context, method, path string, query url.Values, in any) (*Signed, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
	}
	u := c.URL(path)
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, "+api.ProblemContentType)
	if err := c.signer.Sign(req, body); err != nil {
		return nil, err
	}
	return &Signed{c: c, req: req, body: body}, nil
}

// Send sends the signed request and decodes a 2xx answer into out when out
// is not nil (a *json.RawMessage keeps it as received). It returns the
// HTTP status. An error answer is returned as an *api.Problem.
func (s *Signed) Send(ctx context.Context, out any) (int, error) {
	req := s.req.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(s.body))
	req.ContentLength = int64(len(s.body))
	resp, err := s.c.http.Do(req)
	if err != nil {
		// *url.Error names the method and URL itself, quoted and
		// capitalised; say it once, plainly.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, answerError(resp, answer)
	}
	if out != nil && len(answer) > 0 {
		if err := json.Unmarshal(answer, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", req.Method, req.URL.Path, err)
		}
	}
	return resp.StatusCode, nil
}

// Do signs and sends a request: Sign, then Send.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) (int, error) {
	s, err := c.Sign(ctx, method, path, query, in)
	if err != nil {
		return 0, err
	}
	return s.Send(ctx, out)
}

// answerError turns an error answer into the problem it carries, or
// describes it when it carries none (a proxy in the way, say).
func answerError(resp *http.Response, body []byte) error {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == api.ProblemContentType {
		var p api.Problem
		if err := json.Unmarshal(body, &p); err == nil && p.Code != "" {
			return &p
		}
	}
	return fmt.Errorf("the gateway answered %s", resp.Status)
}

// IsProblem reports whether err is an API problem with the given code.
func IsProblem(err error, code string) bool {
	var p *api.Problem
	return errors.As(err, &p) && p.Code == code
}
