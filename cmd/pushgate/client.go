package main

// The client subcommands: each signs its requests with the caller's key,
// calls the gateway's API, and prints what happened and how long it took.
// An API problem is returned as the *gateway.Problem itself, so that it
// prints as "pushgate: <code>: <detail>" and exits 1.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/pushgate/pushgate/gateway"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
)

// defaultGateway is where the client looks for the API when neither
// --gateway nor PUSHGATE_URL says.
const defaultGateway = "http://127.0.0.1:8080"

// maxAnswerBytes bounds what the client reads of an answer.
const maxAnswerBytes = 16 << 20

// clientFlags are the flags every API command shares. When a flag is not
// given, its environment variable is read; the variables are not flag
// defaults because usage output prints defaults, and PUSHGATE_KEY may hold
// the private key itself.
type clientFlags struct {
	getenv  func(string) string
	gateway string
	key     string
	keyID   string
}

func addClientFlags(fs *flag.FlagSet, e *env) *clientFlags {
	c := &clientFlags{getenv: e.getenv}
	fs.StringVar(&c.gateway, "gateway", "", "base URL of the pushgate API (default $PUSHGATE_URL, else "+defaultGateway+")")
	fs.StringVar(&c.key, "key", "", "PKCS#8 PEM file of the Ed25519 key to sign with (default $PUSHGATE_KEY: a file name or the PEM itself)")
	fs.StringVar(&c.keyID, "key-id", "", "id of that key in the gateway's keyring (default $PUSHGATE_KEY_ID)")
	return c
}

// apiClient signs and sends requests to the API.
type apiClient struct {
	base   *url.URL
	signer *signing.Signer
	http   *http.Client
}

// client builds the API client from the flags. A missing or unreadable
// key or a bad URL is a usage error: nothing was sent.
func (c *clientFlags) client() (*apiClient, error) {
	gw, key, keyID := c.gateway, c.key, c.keyID
	if gw == "" {
		gw = c.getenv("PUSHGATE_URL")
	}
	if gw == "" {
		gw = defaultGateway
	}
	if key == "" {
		key = c.getenv("PUSHGATE_KEY")
	}
	if keyID == "" {
		keyID = c.getenv("PUSHGATE_KEY_ID")
	}
	u, err := url.Parse(gw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" {
		return nil, usagef("--gateway %q: want an http or https URL such as %s", gw, defaultGateway)
	}
	if key == "" {
		return nil, usagef("--key (or PUSHGATE_KEY) is required: the PEM file of your signing key")
	}
	if keyID == "" {
		return nil, usagef("--key-id (or PUSHGATE_KEY_ID) is required")
	}
	// Like pushgate sign, take the PEM itself too: that is how a secret
	// usually arrives in PUSHGATE_KEY.
	data, name := []byte(key), "PUSHGATE_KEY"
	if !strings.HasPrefix(strings.TrimSpace(key), "-----BEGIN") {
		if data, err = os.ReadFile(key); err != nil {
			return nil, usagef("read key: %v", err)
		}
		name = key
	}
	priv, err := signing.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, usagef("key %s: %v", name, err)
	}
	// Paths are appended to the base as text, already escaped.
	u.Path, u.RawPath = strings.TrimSuffix(u.Path, "/"), strings.TrimSuffix(u.RawPath, "/")
	u.Fragment, u.RawFragment = "", ""
	transport := http.DefaultTransport.(*http.Transport).Clone()
	return &apiClient{
		base:   u,
		signer: &signing.Signer{KeyID: keyID, Key: priv},
		// A kill that waits for every worker answers within seconds;
		// the bound only keeps a stuck connection from hanging the CLI.
		http: &http.Client{Transport: transport, Timeout: time.Minute},
	}, nil
}

// close releases the client's idle connections.
func (c *apiClient) close() { c.http.CloseIdleConnections() }

// url returns the absolute URL of an API path (already escaped) and query.
func (c *apiClient) url(path string, query url.Values) string {
	s := c.base.String() + path
	if len(query) > 0 {
		s += "?" + query.Encode()
	}
	return s
}

// do signs and sends a request. in, when not nil, is sent as the JSON
// body; a 2xx answer is decoded into out when out is not nil (a
// *json.RawMessage keeps it as received). It returns the HTTP status. An
// error answer is returned as a *gateway.Problem.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, in, out any) (int, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return 0, fmt.Errorf("encode request: %w", err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, query), bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, "+gateway.ProblemContentType)
	if err := c.signer.Sign(req, body); err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error names the method and URL itself, quoted and
		// capitalised; say it once, plainly.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("%s %s: %w", method, req.URL, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, answerError(resp, answer)
	}
	if out != nil && len(answer) > 0 {
		if err := json.Unmarshal(answer, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// answerError turns an error answer into the problem it carries, or
// describes it when it carries none (a proxy in the way, say).
func answerError(resp *http.Response, body []byte) error {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == gateway.ProblemContentType {
		var p gateway.Problem
		if err := json.Unmarshal(body, &p); err == nil && p.Code != "" {
			return &p
		}
	}
	return fmt.Errorf("the gateway answered %s", resp.Status)
}

// parseArgs parses flags that may come before, between or after the
// positional arguments, which it returns: "pushgate status ID --json"
// reads as it would with the flag first.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		// flag stops at "--" or at the first non-flag; after "--"
		// everything is positional.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// took formats a duration for people: ms below a second.
func took(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// parseBroadcastArgs parses the flags of a command that takes exactly one
// broadcast id, and returns the id and its API path.
func parseBroadcastArgs(fs *flag.FlagSet, args []string) (id, path string, err error) {
	rest, err := parseArgs(fs, args)
	if err != nil {
		return "", "", err
	}
	if len(rest) != 1 {
		return "", "", usagef("%s: want one broadcast id", fs.Name())
	}
	path, err = broadcastPath(rest[0])
	if err != nil {
		return "", "", err
	}
	return rest[0], path, nil
}

// broadcastPath is the API path of a broadcast, checking the id's form
// first so that a typo is a usage error, not a request.
func broadcastPath(id string) (string, error) {
	if !queue.ValidBroadcastID(id) {
		return "", usagef("%q is not a broadcast id (they look like b0123abc...)", id)
	}
	return "/v1/broadcasts/" + id, nil
}

// dataFlag collects repeated --data k=v flags.
type dataFlag map[string]string

func (d dataFlag) String() string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k+"="+d[k])
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (d dataFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	d[k] = v
	return nil
}

// readDevices reads a JSON file of [{"platform","token"}], as the
// simulator's devices.json is.
func readDevices(file string) ([]queue.Device, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, usagef("read devices: %v", err)
	}
	var devices []queue.Device
	if err := json.Unmarshal(data, &devices); err != nil {
		return nil, usagef("%s: want a JSON array of {\"platform\", \"token\"}: %v", file, err)
	}
	if len(devices) == 0 {
		return nil, usagef("%s lists no devices", file)
	}
	return devices, nil
}

func runSend(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "send", "(--topic T | --all | --tokens FILE) --title TITLE --body BODY [flags]")
	cf := addClientFlags(fs, e)
	topic := fs.String("topic", "", "send to every device subscribed to this topic")
	all := fs.Bool("all", false, "send to every registered device")
	tokensFile := fs.String("tokens", "", `send to the devices listed in this JSON file: [{"platform":"fcm","token":"..."}]`)
	title := fs.String("title", "", "notification title")
	body := fs.String("body", "", "notification body")
	data := dataFlag{}
	fs.Var(data, "data", "KEY=VALUE data for the app; repeatable")
	ttl := fs.String("ttl", "", "how long providers keep it for offline phones, such as 15m (default 1h)")
	priority := fs.String("priority", "", "high or normal (default high)")
	idemKey := fs.String("idempotency-key", "", "key that makes a retried submission return the first broadcast")
	wait := fs.Bool("wait", false, "follow the broadcast with a progress bar until it ends; exit 0 only if it completed")
	poll := fs.Duration("poll", 500*time.Millisecond, "with --wait, how often to read the broadcast's status")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("send: unexpected argument %q", rest[0])
	}
	req := queue.BroadcastRequest{
		IdempotencyKey: *idemKey,
		Message:        queue.MessageSpec{Title: *title, Body: *body, TTL: *ttl, Priority: *priority},
	}
	if len(data) > 0 {
		req.Message.Data = data
	}
	audiences := 0
	if *topic != "" {
		audiences++
		req.Audience.Topic = *topic
	}
	if *all {
		audiences++
		req.Audience.All = true
	}
	if *tokensFile != "" {
		audiences++
		if req.Audience.Tokens, err = readDevices(*tokensFile); err != nil {
			return err
		}
	}
	switch {
	case audiences != 1:
		return usagef("send: give exactly one of --topic, --all, --tokens")
	case *title == "" && *body == "":
		return usagef("send: give --title, --body or both")
	case *poll <= 0:
		return usagef("send: --poll must be positive")
	}
	if *ttl != "" {
		if _, err := time.ParseDuration(*ttl); err != nil {
			return usagef("send: --ttl %q: want a duration such as 15m", *ttl)
		}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.close()

	start := time.Now()
	var sub struct {
		ID        string `json:"id"`
		State     string `json:"state"`
		StatusURL string `json:"status_url"`
	}
	status, err := c.do(ctx, http.MethodPost, "/v1/broadcasts", nil, req, &sub)
	if err != nil {
		return err
	}
	if status == http.StatusOK {
		fmt.Fprintf(e.stdout, "broadcast %s was already submitted with idempotency key %q (%s), answered in %s\n",
			sub.ID, *idemKey, sub.State, took(time.Since(start)))
	} else {
		fmt.Fprintf(e.stdout, "broadcast %s %s in %s\n", sub.ID, sub.State, took(time.Since(start)))
	}
	fmt.Fprintf(e.stdout, "status: %s\n", c.url(sub.StatusURL, nil))
	if !*wait {
		return nil
	}
	return waitBroadcast(ctx, e, c, sub.ID, *poll, start)
}

// waitBroadcast polls a broadcast's status, showing its progress on
// e.stderr, until it reaches a terminal state. It succeeds only if the
// broadcast completed.
func waitBroadcast(ctx context.Context, e *env, c *apiClient, id string, poll time.Duration, start time.Time) error {
	path, err := broadcastPath(id)
	if err != nil {
		return err
	}
	bar := progressbar.NewOptions64(1,
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("msg"),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(true),
		// Without a spinner interval the bar starts no goroutine of its own.
		progressbar.OptionSetSpinnerChangeInterval(0),
		progressbar.OptionSetDescription("queued"),
	)
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	for {
		var st queue.Status
		_, err := c.do(ctx, http.MethodGet, path, nil, nil, &st)
		var p *gateway.Problem
		switch {
		case errors.As(err, &p) && p.Code == gateway.CodeUnavailable:
			// Redis blinked; the broadcast goes on, so keep watching.
		case err != nil:
			_ = bar.Exit()
			fmt.Fprintln(e.stderr)
			return err
		default:
			n := st.Counters
			done := n.Sent + n.Failed + n.InvalidToken + n.Cancelled + n.Throttled
			total := max(n.Targeted, n.Planned, done, 1)
			bar.Describe(fmt.Sprintf("%s: %d sent, %d failed", st.State, n.Sent, n.Failed+n.InvalidToken))
			if bar.GetMax64() != total {
				bar.ChangeMax64(total)
			}
			_ = bar.Set64(done)
			if st.Terminal() {
				_ = bar.Exit()
				fmt.Fprintln(e.stderr)
				fmt.Fprintf(e.stdout, "broadcast %s %s after %s: %d sent, %d failed, %d invalid tokens, %d cancelled of %d targeted\n",
					id, st.State, took(time.Since(start)), n.Sent, n.Failed, n.InvalidToken, n.Cancelled, n.Targeted)
				if st.State != queue.StateCompleted {
					return fmt.Errorf("broadcast %s did not complete: it ended %s", id, st.State)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			_ = bar.Exit()
			fmt.Fprintln(e.stderr)
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "status", "ID [--json]")
	cf := addClientFlags(fs, e)
	raw := fs.Bool("json", false, "print the status as the API returns it")
	_, path, err := parseBroadcastArgs(fs, args)
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.close()
	start := time.Now()
	var answer json.RawMessage
	if _, err := c.do(ctx, http.MethodGet, path, nil, nil, &answer); err != nil {
		return err
	}
	if *raw {
		_, err := fmt.Fprintf(e.stdout, "%s\n", answer)
		return err
	}
	var st queue.Status
	if err := json.Unmarshal(answer, &st); err != nil {
		return fmt.Errorf("decode status: %w", err)
	}
	audience := st.Audience
	if st.Topic != "" {
		audience += " " + st.Topic
	}
	fmt.Fprintf(e.stdout, "broadcast %s: %s (read in %s)\n", st.ID, st.State, took(time.Since(start)))
	fmt.Fprintf(e.stdout, "  key %s, audience %s, ttl %s, created %s\n", st.KeyID, audience, st.TTL, st.CreatedAt.Format(time.RFC3339))
	n := st.Counters
	fmt.Fprintf(e.stdout, "  targeted %d  sent %d  failed %d  invalid_token %d  cancelled %d  throttled %d\n",
		n.Targeted, n.Sent, n.Failed, n.InvalidToken, n.Cancelled, n.Throttled)
	fmt.Fprintf(e.stdout, "  skipped_duplicate %d  retries %d  rate_limited_retries %d  recalled %d  recall_failed %d\n",
		n.SkippedDuplicate, n.Retries, n.RateLimitedRetries, n.Recalled, n.RecallFailed)
	return nil
}

func runCancel(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "cancel", "ID [--reason R]")
	cf := addClientFlags(fs, e)
	reason := fs.String("reason", "", "why, for the audit log")
	id, path, err := parseBroadcastArgs(fs, args)
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.close()
	start := time.Now()
	var st queue.Status
	if _, err := c.do(ctx, http.MethodPost, path+"/cancel", nil, map[string]string{"reason": *reason}, &st); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "cancelled broadcast %s in %s: state %s\n", id, took(time.Since(start)), st.State)
	return nil
}

func runRecall(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "recall", "ID --mode replace --title T --body B | ID --mode remove")
	cf := addClientFlags(fs, e)
	mode := fs.String("mode", "", "replace (show a correction instead) or remove (delete it from the phones)")
	title := fs.String("title", "", "with --mode replace: the correction's title")
	body := fs.String("body", "", "with --mode replace: the correction's body")
	id, path, err := parseBroadcastArgs(fs, args)
	if err != nil {
		return err
	}
	req := queue.RecallRequest{Mode: *mode}
	switch *mode {
	case queue.RecallReplace:
		if *title == "" && *body == "" {
			return usagef("recall: --mode replace needs --title, --body or both")
		}
		req.Replacement = &queue.MessageSpec{Title: *title, Body: *body}
	case queue.RecallRemove:
		if *title != "" || *body != "" {
			return usagef("recall: --mode remove takes no --title or --body")
		}
	default:
		return usagef("recall: --mode must be replace or remove")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.close()
	start := time.Now()
	var st queue.Status
	if _, err := c.do(ctx, http.MethodPost, path+"/recall", nil, req, &st); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "recall (%s) of broadcast %s started in %s: state %s; pushgate status %s follows it\n",
		*mode, id, took(time.Since(start)), st.State, id)
	return nil
}

// killAnswer is the API's answer to a kill, and part of its answer to a
// revoke.
type killAnswer struct {
	Version int64            `json:"version"`
	Waited  bool             `json:"waited"`
	Ack     *queue.AckReport `json:"ack"`
}

// describe says how far the kill got: durable, or acknowledged by which
// workers. It reports false when it waited and a worker did not answer.
func (k killAnswer) describe() (string, bool) {
	if !k.Waited || k.Ack == nil {
		return "durable; every worker applies it within a second", true
	}
	if k.Ack.Acknowledged {
		return fmt.Sprintf("acknowledged by %d workers", k.Ack.Workers), true
	}
	return fmt.Sprintf("NOT acknowledged by %d of %d workers: %s", len(k.Ack.Missing), k.Ack.Workers,
		strings.Join(k.Ack.Missing, ", ")), false
}

func runKill(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "kill", "--scope global|key:ID|broadcast:ID|topic:NAME --reason R [--wait]")
	cf := addClientFlags(fs, e)
	scope := fs.String("scope", "", "what to stop: global, key:ID, broadcast:ID or topic:NAME")
	reason := fs.String("reason", "", "why, for the audit log (required)")
	wait := fs.Bool("wait", false, "return only when every live worker has acknowledged the kill")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usagef("kill: unexpected argument %q", rest[0])
	case *scope == "":
		return usagef("kill: --scope is required")
	case strings.TrimSpace(*reason) == "":
		return usagef("kill: --reason is required")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.close()
	var query url.Values
	if *wait {
		query = url.Values{"wait": {"true"}}
	}
	start := time.Now()
	var k killAnswer
	if _, err := c.do(ctx, http.MethodPost, "/v1/kill", query, map[string]string{"scope": *scope, "reason": *reason}, &k); err != nil {
		return err
	}
	what, ok := k.describe()
	fmt.Fprintf(e.stdout, "killed scope %s in %s: %s\n", *scope, took(time.Since(start)), what)
	if !ok {
		return fmt.Errorf("the kill is durable, but not every worker acknowledged it")
	}
	return nil
}

func runResume(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "resume", "--scope global|key:ID|topic:NAME [--reason R]")
	cf := addClientFlags(fs, e)
	scope := fs.String("scope", "", "the kill to lift: global, key:ID or topic:NAME")
	reason := fs.String("reason", "", "why, for the audit log")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usagef("resume: unexpected argument %q", rest[0])
	case *scope == "":
		return usagef("resume: --scope is required")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.close()
	start := time.Now()
	var answer struct {
		Version int64 `json:"version"`
	}
	if _, err := c.do(ctx, http.MethodPost, "/v1/resume", nil, map[string]string{"scope": *scope, "reason": *reason}, &answer); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "resumed scope %s in %s (kill version %d)\n", *scope, took(time.Since(start)), answer.Version)
	return nil
}

func runKeys(ctx context.Context, e *env, args []string) error {
	return runVerb(ctx, e, "keys", args, []verb{
		{"revoke", "ID [--reason R]: revoke a key and kill its running broadcasts", runKeysRevoke},
	})
}

func runKeysRevoke(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "keys revoke", "ID [--reason R]")
	cf := addClientFlags(fs, e)
	reason := fs.String("reason", "", "why, for the audit log")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || rest[0] == "" {
		return usagef("keys revoke: want one key id")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.close()
	start := time.Now()
	var answer struct {
		Kill killAnswer `json:"kill"`
	}
	path := "/v1/keys/" + url.PathEscape(rest[0]) + "/revoke"
	if _, err := c.do(ctx, http.MethodPost, path, nil, map[string]string{"reason": *reason}, &answer); err != nil {
		return err
	}
	what, ok := answer.Kill.describe()
	fmt.Fprintf(e.stdout, "revoked key %s in %s; its running broadcasts are killed (%s)\n", rest[0], took(time.Since(start)), what)
	if !ok {
		return fmt.Errorf("the revocation is durable, but not every worker acknowledged it")
	}
	return nil
}

func runDevices(ctx context.Context, e *env, args []string) error {
	return runVerb(ctx, e, "devices", args, []verb{
		{"import", "FILE [--topic T]: register the devices of a JSON file, 10,000 per request", runDevicesImport},
	})
}

func runDevicesImport(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "devices import", `FILE [--topic T]   (FILE: [{"platform":"fcm","token":"..."}, ...])`)
	cf := addClientFlags(fs, e)
	topic := fs.String("topic", "", "topic the devices join (they always join all)")
	chunk := fs.Int("chunk", queue.MaxTokens, "devices per request, at most 10000")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("devices import: want one FILE")
	}
	if *chunk < 1 || *chunk > queue.MaxTokens {
		return usagef("devices import: --chunk must be 1 to %d", queue.MaxTokens)
	}
	if *topic != "" && !queue.ValidTopic(*topic) {
		return usagef("devices import: --topic %q: want 1 to 128 of A-Z a-z 0-9 _ . ~ -", *topic)
	}
	devices, err := readDevices(rest[0])
	if err != nil {
		return err
	}
	var topics []string
	if *topic != "" {
		topics = []string{*topic}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.close()
	start := time.Now()
	imported, requests := 0, 0
	for i := 0; i < len(devices); i += *chunk {
		batch := devices[i:min(i+*chunk, len(devices))]
		req := queue.ImportRequest{Devices: make([]queue.ImportDevice, len(batch))}
		for j, d := range batch {
			req.Devices[j] = queue.ImportDevice{Platform: string(d.Platform), Token: d.Token, Topics: topics}
		}
		var answer struct {
			Imported int `json:"imported"`
		}
		if _, err := c.do(ctx, http.MethodPost, "/v1/devices/import", nil, req, &answer); err != nil {
			if imported > 0 {
				fmt.Fprintf(e.stderr, "imported %d of %d devices before the failure\n", imported, len(devices))
			}
			return err
		}
		imported += answer.Imported
		requests++
	}
	into := ""
	if *topic != "" {
		into = " into topic " + *topic
	}
	fmt.Fprintf(e.stdout, "imported %d devices%s in %s (%d requests)\n", imported, into, took(time.Since(start)), requests)
	return nil
}

func runAudit(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "audit", "[--limit N] [--json]")
	cf := addClientFlags(fs, e)
	limit := fs.Int("limit", 50, "how many entries, newest first (at most 1000)")
	raw := fs.Bool("json", false, "print the entries as the API returns them")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usagef("audit: unexpected argument %q", rest[0])
	case *limit < 1 || *limit > 1000:
		return usagef("audit: --limit must be 1 to 1000")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.close()
	start := time.Now()
	var answer json.RawMessage
	if _, err := c.do(ctx, http.MethodGet, "/v1/audit", url.Values{"limit": {strconv.Itoa(*limit)}}, nil, &answer); err != nil {
		return err
	}
	if *raw {
		_, err := fmt.Fprintf(e.stdout, "%s\n", answer)
		return err
	}
	var log struct {
		Entries []queue.AuditEntry `json:"entries"`
	}
	if err := json.Unmarshal(answer, &log); err != nil {
		return fmt.Errorf("decode audit log: %w", err)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tACTOR\tACTION\tTARGET\tREASON\tOUTCOME")
	for _, a := range log.Entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.At.Format(time.RFC3339), a.Actor, a.Action, a.Target, a.Reason, a.Outcome)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%d entries, read in %s\n", len(log.Entries), took(time.Since(start)))
	return nil
}

// verb is one action of a command with verbs, like "keys revoke".
type verb struct {
	name, summary string
	run           func(ctx context.Context, e *env, args []string) error
}

// runVerb dispatches "CMD VERB ARGS" to the verb's run.
func runVerb(ctx context.Context, e *env, cmd string, args []string, verbs []verb) error {
	usage := func() {
		fmt.Fprintf(e.stderr, "Usage: pushgate %s VERB [flags]\n\nVerbs:\n", cmd)
		for _, v := range verbs {
			fmt.Fprintf(e.stderr, "  %s %s\n", v.name, v.summary)
		}
	}
	if len(args) == 0 {
		usage()
		return usagef("%s: no verb given", cmd)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage()
		return errHelp
	}
	for _, v := range verbs {
		if v.name == args[0] {
			return v.run(ctx, e, args[1:])
		}
	}
	usage()
	return usagef("%s: unknown verb %q", cmd, args[0])
}
