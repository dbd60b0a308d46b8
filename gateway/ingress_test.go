package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/gateway/gatewaytest"
	"github.com/pushgate/pushgate/signing"
)

// hangGuard bounds waits that only a hang would exceed.
const hangGuard = 2 * time.Minute

// TestRequestSignedForAnotherAuthorityIsRefused replays what a staging
// gateway's client signed (same key, another host) to this gateway: it is
// refused, and nothing is stored.
func TestRequestSignedForAnotherAuthorityIsRefused(t *testing.T) {
	env := gatewaytest.Start(t)
	register(t, env, "citizens", 1)
	body := []byte(broadcastBody(tokensJSON(1)))
	req := newRequest(t, env, gatewaytest.Sender, "POST", "/v1/broadcasts", body, func(r *http.Request) {
		r.Host = "staging.pushgate.test:8080"
	})
	r := send(t, env, req)
	if r.status != http.StatusUnauthorized {
		t.Fatalf("status = %d, want 401; body %s", r.status, r.body)
	}
	if p := r.problem(t); p.Code != "wrong_authority" {
		t.Errorf("code = %q, want wrong_authority (%s)", p.Code, p.Detail)
	}
	assertNothingStored(t, env)

	// The same request signed for this gateway's own authority, in
	// another case, is accepted.
	u, _ := url.Parse(env.URL)
	req = newRequest(t, env, gatewaytest.Sender, "POST", "/v1/broadcasts", body, func(r *http.Request) {
		r.Host = strings.ToUpper("localhost") + ":" + u.Port()
	})
	if r := send(t, env, req); r.status != http.StatusAccepted {
		t.Fatalf("signed for LOCALHOST:%s: %d %s, want 202", u.Port(), r.status, r.body)
	}
}

// TestRefusalsComeBeforeTheBody sends requests whose body has barely
// begun: each must be answered from its header fields alone, while most
// of its body is still unsent. A gateway that read bodies before checking
// signatures would wait for them, holding up to 4 MiB per request; one
// that waited for the rest of a body it will not use (net/http reads up
// to 256 KiB of it before answering) would wait as long as the client.
func TestRefusalsComeBeforeTheBody(t *testing.T) {
	env := gatewaytest.Start(t)
	tests := []struct {
		name     string
		key      string
		path     string
		size     int
		opts     []func(*http.Request)
		wantCode string
	}{
		{"unsigned", "", "/v1/devices/import", 2 << 20, nil, string(signing.CodeMissingSignature)},
		{"unsigned, a small body", "", "/v1/devices/import", 128 << 10, nil, string(signing.CodeMissingSignature)},
		{"unknown key", "nobody", "/v1/devices/import", 2 << 20, nil, string(signing.CodeBadSignature)},
		{"another authority", gatewaytest.Registrar, "/v1/devices/import", 128 << 10,
			[]func(*http.Request){func(r *http.Request) { r.Host = "staging.pushgate.test" }}, "wrong_authority"},
		{"wrong role", gatewaytest.Sender, "/v1/devices/import", 128 << 10, nil, api.CodeForbidden},
		{"over the route's limit", "", "/v1/broadcasts", 2 << 20, nil, api.CodeBodyTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := append([]byte(`{"devices":[]}`), bytes.Repeat([]byte(" "), tt.size)...)
			req, err := http.NewRequest("POST", env.URL+tt.path, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			for _, o := range tt.opts {
				o(req)
			}
			switch tt.key {
			case "":
			case "nobody":
				s := *env.Signers[gatewaytest.Sender]
				s.KeyID = "nobody"
				if err := s.Sign(req, body); err != nil {
					t.Fatal(err)
				}
			default:
				if err := env.Signers[tt.key].Sign(req, body); err != nil {
					t.Fatal(err)
				}
			}
			r := sendHead(t, env, req, 64<<10)
			if p := r.problem(t); p.Code != tt.wantCode {
				t.Errorf("code = %q, want %q (%s)", p.Code, tt.wantCode, p.Detail)
			}
		})
	}
}

// sendHead writes req's header and the first n bytes of its body on a
// fresh connection and reads the answer without sending the rest.
func sendHead(t *testing.T, env *gatewaytest.Env, req *http.Request, n int) response {
	t.Helper()
	conn, _ := startRequest(t, env, req, n)
	defer conn.Close()
	return readResponse(t, conn, req)
}

// importBody is a valid import of one device into topic, padded with
// whitespace to about size bytes.
func importBody(topic string, size int) []byte {
	return []byte(`{"devices":[` + strings.Repeat(" ", size) +
		`{"platform":"fcm","token":"tok-` + topic + `","topics":["` + topic + `"]}]}`)
}

// TestBodyReadsAreBounded holds the one body read a gateway allows with a
// body that stalls: a second signed request waits for it, unread, and
// goes on once the first body is complete.
func TestBodyReadsAreBounded(t *testing.T) {
	env := gatewaytest.StartWith(t, gatewaytest.Options{BodyReads: 1, BodyReadTimeout: hangGuard})
	firstBody := importBody("first", 256<<10)
	first := newRequest(t, env, gatewaytest.Registrar, "POST", "/v1/devices/import", firstBody)
	conn, rest := startRequest(t, env, first, 1024)
	defer conn.Close()
	waitFor(t, "the first body's read", func() bool { return bodyReads(t, env, "reading") == 1 })

	second := make(chan response, 1)
	go func() {
		req := newRequest(t, env, gatewaytest.Registrar, "POST", "/v1/devices/import", importBody("second", 16))
		resp, err := env.Server.Client().Do(req)
		if err != nil {
			t.Errorf("second request: %v", err)
			close(second)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		second <- response{status: resp.StatusCode, header: resp.Header, body: b}
	}()
	waitFor(t, "the second request to wait for a body read", func() bool { return bodyReads(t, env, "waiting") == 1 })
	select {
	case r := <-second:
		t.Fatalf("the second request was answered (%d %s) while the first body held the only read", r.status, r.body)
	default:
	}

	if _, err := conn.Write(rest); err != nil {
		t.Fatal(err)
	}
	if r := readResponse(t, conn, first); r.status != http.StatusOK {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	var r response
	select {
	case r = <-second:
	case <-time.After(hangGuard):
		t.Fatal("hung: the second request was not answered after the first body was read")
	}
	if r.status != http.StatusOK {
		t.Fatalf("second: %d %s", r.status, r.body)
	}
	if n, _ := env.Service.Registry().Count(context.Background(), ""); n != 2 {
		t.Errorf("registry holds %d devices, want both imports'", n)
	}
	waitFor(t, "the body reads to end", func() bool {
		return bodyReads(t, env, "reading") == 0 && bodyReads(t, env, "waiting") == 0
	})
}

// TestStalledBodyIsRefused checks that a signed request whose body stops
// arriving is answered body_timeout once the body read timeout passes,
// and that its read is given back.
func TestStalledBodyIsRefused(t *testing.T) {
	env := gatewaytest.StartWith(t, gatewaytest.Options{BodyReads: 1, BodyReadTimeout: 50 * time.Millisecond})
	req := newRequest(t, env, gatewaytest.Registrar, "POST", "/v1/devices/import", importBody("stalled", 64<<10))
	conn, _ := startRequest(t, env, req, 1024)
	defer conn.Close()
	r := readResponse(t, conn, req)
	if r.status != http.StatusRequestTimeout {
		t.Fatalf("status = %d, want 408; %s", r.status, r.body)
	}
	if p := r.problem(t); p.Code != api.CodeBodyTimeout {
		t.Errorf("code = %q, want %s", p.Code, api.CodeBodyTimeout)
	}
	if n, _ := env.Service.Registry().Count(context.Background(), ""); n != 0 {
		t.Errorf("registry holds %d devices after a refused import", n)
	}
	// The one body read is free again.
	if r := call(t, env, gatewaytest.Registrar, "POST", "/v1/devices/import", string(importBody("next", 16))); r.status != http.StatusOK {
		t.Fatalf("the next import: %d %s", r.status, r.body)
	}
}

// TestChunkedBodyIsVerified sends a body of unknown length: its digest is
// checked as it arrives, and one that does not match is refused.
func TestChunkedBodyIsVerified(t *testing.T) {
	env := gatewaytest.Start(t)
	tests := []struct {
		name string
		send string
		want int
	}{
		{"as signed", "", http.StatusOK},
		{"altered", `{"devices":[]}`, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := importBody("chunked", 8)
			req := newRequest(t, env, gatewaytest.Registrar, "POST", "/v1/devices/import", body)
			sent := body
			if tt.send != "" {
				sent = []byte(tt.send)
			}
			req.Body = io.NopCloser(bytes.NewReader(sent))
			req.ContentLength = -1 // chunked
			r := send(t, env, req)
			if r.status != tt.want {
				t.Fatalf("status = %d, want %d; %s", r.status, tt.want, r.body)
			}
			if tt.want != http.StatusOK {
				if p := r.problem(t); p.Code != string(signing.CodeDigestMismatch) {
					t.Errorf("code = %q, want digest_mismatch", p.Code)
				}
			}
		})
	}
}

// startRequest writes req's header and the first n bytes of its body on a
// fresh connection, and returns the connection and the rest of the body.
func startRequest(t *testing.T, env *gatewaytest.Env, req *http.Request, n int) (net.Conn, []byte) {
	t.Helper()
	var raw bytes.Buffer
	if err := req.Write(&raw); err != nil {
		t.Fatal(err)
	}
	cut := bytes.Index(raw.Bytes(), []byte("\r\n\r\n")) + 4 + n
	conn, err := net.Dial("tcp", env.Server.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(raw.Bytes()[:cut]); err != nil {
		conn.Close()
		t.Fatal(err)
	}
	return conn, raw.Bytes()[cut:]
}

// readResponse reads the answer to req from conn.
func readResponse(t *testing.T, conn net.Conn, req *http.Request) response {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(hangGuard))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("hung or failed: no answer: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// bodyReads is the gateway's pushgate_http_body_reads gauge for state.
func bodyReads(t *testing.T, env *gatewaytest.Env, state string) float64 {
	t.Helper()
	families, err := env.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "pushgate_http_body_reads" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "state" && l.GetValue() == state {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// waitFor polls cond until it holds, failing if it hangs.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(hangGuard); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hung: waited %s for %s", hangGuard, what)
		}
	}
}
