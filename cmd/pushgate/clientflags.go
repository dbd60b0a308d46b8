package main

// The API commands share their flags, their key loading and their
// argument parsing here; each command signs its requests through package
// client and prints what happened and how long it took. An API problem is
// returned as the *api.Problem itself, so that it prints as
// "pushgate: <code>: <detail>" and exits 1.

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/signing"
)

// defaultGateway is where the client looks for the API when neither
// --gateway nor PUSHGATE_URL says.
const defaultGateway = "http://127.0.0.1:8080"

// clientFlags are the flags every API command shares. When a flag is not
// given, its environment variable is read; the variables are not flag
// defaults because usage output prints defaults, and PUSHGATE_KEY may hold
// the private key itself.
type clientFlags struct {
	getenv  func(string) string
	gateway string
	key     string
	keyID   string
	// keyring is --keyring, on the commands that check their key's scope
	// before they send (addKeyringFlag).
	keyring string
}

func addClientFlags(fs *flag.FlagSet, e *env) *clientFlags {
	c := &clientFlags{getenv: e.getenv}
	fs.StringVar(&c.gateway, "gateway", "", "base URL of the pushgate API (default $PUSHGATE_URL, else "+defaultGateway+")")
	fs.StringVar(&c.key, "key", "", "PKCS#8 PEM file of the Ed25519 key to sign with (default $PUSHGATE_KEY: a file name or the PEM itself)")
	fs.StringVar(&c.keyID, "key-id", "", "id of that key in the gateway's keyring (default $PUSHGATE_KEY_ID)")
	return c
}

// client builds the API client from the flags. A missing or unreadable
// key or a bad URL is a usage error: nothing was sent.
func (c *clientFlags) client() (*client.Client, error) {
	gw := c.gateway
	if gw == "" {
		gw = c.getenv("PUSHGATE_URL")
	}
	if gw == "" {
		gw = defaultGateway
	}
	s, err := c.signer()
	if err != nil {
		return nil, err
	}
	cl, err := client.New(gw, s)
	if err != nil {
		return nil, usagef("--gateway %q: want an http or https URL such as %s", gw, defaultGateway)
	}
	return cl, nil
}

// signer reads the signing key the flags or the environment name.
func (c *clientFlags) signer() (*signing.Signer, error) {
	key, keyID := c.key, c.keyID
	if key == "" {
		key = c.getenv("PUSHGATE_KEY")
	}
	if keyID == "" {
		keyID = c.getenv("PUSHGATE_KEY_ID")
	}
	if key == "" {
		return nil, usagef("--key (or PUSHGATE_KEY) is required: the PEM file of your signing key")
	}
	if keyID == "" {
		return nil, usagef("--key-id (or PUSHGATE_KEY_ID) is required")
	}
	priv, err := readPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &signing.Signer{KeyID: keyID, Key: priv}, nil
}

// addKeyringFlag adds --keyring to a command that names topics, so that
// it can refuse what its key may not do before it sends anything.
func (c *clientFlags) addKeyringFlag(fs *flag.FlagSet) {
	fs.StringVar(&c.keyring, "keyring", "", "the gateway's keyring file (default $PUSHGATE_KEYRING_FILE): when given, the key's role and topics are checked here, before anything is sent")
}

// localKey returns the signing key's entry in the keyring that --keyring
// or PUSHGATE_KEYRING_FILE names, or nil when neither names one: then the
// gateway alone judges the request. The entry must hold the signing key's
// public key, or the keyring is not the one the gateway checks it with.
func (c *clientFlags) localKey() (*signing.Key, error) {
	file := c.keyring
	if file == "" {
		file = c.getenv("PUSHGATE_KEYRING_FILE")
	}
	if file == "" {
		return nil, nil
	}
	s, err := c.signer()
	if err != nil {
		return nil, err
	}
	kr, err := signing.LoadKeyring(file)
	if err != nil {
		return nil, usagef("--keyring: %v", err)
	}
	k, ok := kr.Lookup(s.KeyID)
	if !ok {
		return nil, usagef("--key-id %s: no such key in the keyring %s", s.KeyID, file)
	}
	if !k.Public.Equal(s.Key.Public()) {
		return nil, usagef("--key: not the private key of %s in the keyring %s", s.KeyID, file)
	}
	return k, nil
}

// checkRole refuses, before anything is sent, a command whose key lacks
// role r in the local keyring (when there is one).
func checkRole(cmd string, k *signing.Key, r signing.Role) error {
	if k != nil && !k.Has(r) {
		return usagef("%s: --key-id %s: the key has no %s role (its roles: %s)", cmd, k.ID, r, joinRoles(k.Roles))
	}
	return nil
}

// joinRoles lists roles for a message.
func joinRoles(roles []signing.Role) string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// topicsOf lists a key's topic patterns for a message.
func topicsOf(k *signing.Key) string {
	if len(k.Topics) == 0 {
		return "none"
	}
	return strings.Join(k.Topics, ", ")
}

// required refuses a flag left out or given blank.
func required(fs *flag.FlagSet, name, value string) error {
	if strings.TrimSpace(value) == "" {
		return usagef("%s: --%s is required", fs.Name(), name)
	}
	return nil
}

// refuseBlank refuses the named flags when they were given with a blank
// value: "--topic $TOPIC" with TOPIC unset must not quietly mean no topic.
func refuseBlank(fs *flag.FlagSet, names ...string) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err == nil && slices.Contains(names, f.Name) && strings.TrimSpace(f.Value.String()) == "" {
			err = usagef("%s: --%s is empty", fs.Name(), f.Name)
		}
	})
	return err
}

// readPrivateKey loads a signing key from a file, or from the PEM text
// itself, which is how a secret usually arrives in PUSHGATE_KEY.
func readPrivateKey(src string) (ed25519.PrivateKey, error) {
	data := []byte(src)
	name := "PUSHGATE_KEY"
	if !strings.HasPrefix(strings.TrimSpace(src), "-----BEGIN") {
		var err error
		if data, err = os.ReadFile(src); err != nil {
			return nil, usagef("read key: %v", err)
		}
		name = src
	}
	priv, err := signing.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, usagef("key %s: %v", name, err)
	}
	return priv, nil
}

// getJSON reads an API resource into out, or, with raw, prints it as the
// API returned it and reports that it did.
func getJSON(ctx context.Context, e *env, c *client.Client, path string, query url.Values, raw bool, out any) (printed bool, err error) {
	var answer json.RawMessage
	if _, err := c.Do(ctx, http.MethodGet, path, query, nil, &answer); err != nil {
		return false, err
	}
	if raw {
		_, err := fmt.Fprintf(e.stdout, "%s\n", answer)
		return true, err
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return false, fmt.Errorf("decode %s: %w", path, err)
	}
	return false, nil
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

// parseBroadcastArgs parses the flags of a command that takes exactly one
// broadcast id, checking the id's form so that a typo is a usage error,
// not a request.
func parseBroadcastArgs(fs *flag.FlagSet, args []string) (string, error) {
	rest, err := parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if len(rest) != 1 {
		return "", usagef("%s: want one broadcast id", fs.Name())
	}
	if !api.ValidBroadcastID(rest[0]) {
		return "", usagef("%q is not a broadcast id (they look like b0123abc...)", rest[0])
	}
	return rest[0], nil
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

// keyValues collects repeated KEY=VALUE flags.
type keyValues map[string]string

func (d keyValues) String() string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k+"="+d[k])
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (d keyValues) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	d[k] = v
	return nil
}
