package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Role is what a key may do; see docs/ARCHITECTURE.md, "Threat model".
type Role string

// The roles a key can hold.
const (
	RoleBroadcast Role = "broadcast" // submit broadcasts within its topics and audience cap
	RoleRegister  Role = "register"  // register and remove device tokens
	RoleApprove   Role = "approve"   // co-sign broadcasts that need approval
	RoleAdmin     Role = "admin"     // kill-switch, resume, recall, revoke, audit log
)

func (r Role) valid() bool {
	switch r {
	case RoleBroadcast, RoleRegister, RoleApprove, RoleAdmin:
		return true
	}
	return false
}

// Rate is a number of events per period: Count messages per Per for a
// delivery rate, Count distinct devices per rolling Per for a reach
// budget. The zero Rate means unlimited. Its text form is COUNT/PERIOD with
// PERIOD one of s, min, h or d, optionally preceded by a whole number, as in
// "6000/min" or "200000/24h".
type Rate struct {
	Count int
	Per   time.Duration
}

// rateUnits are the units of a Rate's period, longest name first.
var rateUnits = []struct {
	name string
	d    time.Duration
}{{"min", time.Minute}, {"s", time.Second}, {"h", time.Hour}, {"d", 24 * time.Hour}}

// ParseRate parses the text form of a Rate; "" is the zero Rate.
func ParseRate(s string) (Rate, error) {
	if s == "" {
		return Rate{}, nil
	}
	count, period, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("%q: want COUNT/PERIOD, such as 6000/min or 200000/24h", s)
	}
	n, err := strconv.Atoi(count)
	if err != nil || n <= 0 {
		return Rate{}, fmt.Errorf("%q: count must be a positive integer", s)
	}
	for _, u := range rateUnits {
		digits, ok := strings.CutSuffix(period, u.name)
		if !ok {
			continue
		}
		times := 1
		if digits != "" {
			if times, err = strconv.Atoi(digits); err != nil || times <= 0 || times > 1000 || digits[0] == '0' {
				return Rate{}, fmt.Errorf("%q: the period's multiple must be 1 to 1000", s)
			}
		}
		return Rate{Count: n, Per: time.Duration(times) * u.d}, nil
	}
	return Rate{}, fmt.Errorf("%q: the period must be s, min, h or d, such as 24h", s)
}

// String returns the text form of r, "" for the zero Rate.
func (r Rate) String() string {
	if r == (Rate{}) {
		return ""
	}
	period := r.Per.String()
	for _, u := range []struct {
		name string
		d    time.Duration
	}{{"h", time.Hour}, {"min", time.Minute}, {"s", time.Second}} {
		if r.Per%u.d == 0 {
			period = u.name
			if times := int64(r.Per / u.d); times != 1 {
				period = strconv.FormatInt(times, 10) + u.name
			}
			break
		}
	}
	return strconv.Itoa(r.Count) + "/" + period
}

// MarshalText returns the text form of r.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses the text form of a Rate.
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Key is one entry of the keyring: a signer's public key and what it may
// do. Keys from a Keyring are shared and must not be modified.
type Key struct {
	ID     string
	Public ed25519.PublicKey
	Roles  []Role
	// Topics are path.Match patterns of the topics the key may broadcast
	// to; the literal "*" also permits the audience "all".
	Topics []string
	// MaxAudience caps the devices one broadcast of this key may target.
	// Keys with the broadcast role must set it; it means nothing for others.
	MaxAudience int
	// Rate caps delivery of this key's broadcasts; zero is unlimited.
	Rate Rate
	// Owner names the person or team who holds the key. Approvals count
	// once per owner, and never the submitter's owner. It is the key id
	// when the keyring names none.
	Owner string
	// Reach caps the distinct devices this key's broadcasts reach in a
	// rolling window, across every broadcast and every process. It is
	// MaxAudience per 24 hours when the keyring names none.
	Reach Rate
	// ApprovalAbove is the audience, in devices, above which a broadcast of
	// this key waits for approvals; zero leaves it to the gateway's policy.
	ApprovalAbove int
	// MaxDevices caps the devices a register key may create; zero is
	// unlimited.
	MaxDevices int
}

// DefaultReachWindow is the window of a key's reach budget when its
// keyring entry names no reach.
const DefaultReachWindow = 24 * time.Hour

// Has reports whether the key holds role r.
func (k *Key) Has(r Role) bool { return slices.Contains(k.Roles, r) }

// AllowsTopic reports whether one of the key's patterns matches topic.
func (k *Key) AllowsTopic(topic string) bool {
	for _, p := range k.Topics {
		// Patterns were validated when the keyring was built.
		if ok, _ := path.Match(p, topic); ok {
			return true
		}
	}
	return false
}

// AllowsAll reports whether the key may broadcast to every device: only a
// key whose topics include the literal "*" may.
func (k *Key) AllowsAll() bool { return slices.Contains(k.Topics, "*") }

// Keyring is the set of keys the gateway accepts. It is immutable once
// built, so it can be shared between goroutines and swapped whole.
type Keyring struct {
	keys []*Key
	byID map[string]*Key
}

var _ KeyLookup = (*Keyring)(nil)

// Lookup returns the key with the given id.
func (k *Keyring) Lookup(id string) (*Key, bool) {
	key, ok := k.byID[id]
	return key, ok
}

// Keys returns the keys in file order.
func (k *Keyring) Keys() []*Key { return slices.Clone(k.keys) }

// LoadKeyring reads and parses a keyring file.
func LoadKeyring(file string) (*Keyring, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	kr, err := ParseKeyring(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return kr, nil
}

// maxKeyID bounds key ids, which appear in Redis keys and logs.
const maxKeyID = 64

// ParseKeyring parses a keyring document:
//
//	keys:
//	  - id: city-alerts
//	    public_key: MCowBQYDK2VwAyEA...   # PEM SPKI, base64 SPKI DER or base64 of the raw 32 bytes
//	    roles: [broadcast, register]
//	    topics: ["citizens", "district-*"]
//	    max_audience: 100000
//	    rate: 6000/min
//
// Decoding is strict: unknown or repeated fields, duplicate ids, unknown
// roles, bad patterns, rates or keys are errors that name the key (by id,
// or by position when it has none) and the field.
func ParseKeyring(data []byte) (*Keyring, error) {
	var doc struct {
		Keys *[]yaml.Node `yaml:"keys"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("keyring: empty document")
		}
		return nil, fmt.Errorf("keyring: %s", yamlMessage(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("keyring: more than one YAML document")
	}
	if doc.Keys == nil {
		return nil, errors.New("keyring: no keys list")
	}
	kr := &Keyring{byID: make(map[string]*Key)}
	for i := range *doc.Keys {
		n := &(*doc.Keys)[i]
		name := keyName(n, i)
		k, err := parseKey(n)
		if err != nil {
			return nil, fmt.Errorf("keyring: %s: %w", name, err)
		}
		if _, dup := kr.byID[k.ID]; dup {
			return nil, fmt.Errorf("keyring: %s: id: duplicate", name)
		}
		kr.byID[k.ID] = k
		kr.keys = append(kr.keys, k)
	}
	return kr, nil
}

// keyName names entry i for error messages: by id when it has a usable
// one, else by position counted from 1.
func keyName(n *yaml.Node, i int) string {
	if n.Kind == yaml.MappingNode {
		for j := 0; j+1 < len(n.Content); j += 2 {
			if k, v := n.Content[j], n.Content[j+1]; k.Value == "id" && v.Kind == yaml.ScalarNode && validKeyID(v.Value) {
				return fmt.Sprintf("key %q", v.Value)
			}
		}
	}
	return fmt.Sprintf("key #%d", i+1)
}

// parseKey decodes one entry field by field, so that each error can name
// its field.
func parseKey(n *yaml.Node) (*Key, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of id, public_key, roles, ...", n.Line)
	}
	var (
		k         Key
		publicKey string
		roles     []string
		rate      string
		reach     string
		seen      = make(map[string]bool)
	)
	for j := 0; j+1 < len(n.Content); j += 2 {
		field, value := n.Content[j].Value, n.Content[j+1]
		if seen[field] {
			return nil, fmt.Errorf("%s: repeated", field)
		}
		seen[field] = true
		var err error
		switch field {
		case "id":
			err = value.Decode(&k.ID)
		case "public_key":
			err = value.Decode(&publicKey)
		case "roles":
			err = value.Decode(&roles)
		case "topics":
			err = value.Decode(&k.Topics)
		case "max_audience":
			err = value.Decode(&k.MaxAudience)
		case "rate":
			err = value.Decode(&rate)
		case "owner":
			err = value.Decode(&k.Owner)
		case "reach":
			err = value.Decode(&reach)
		case "approval_above":
			err = value.Decode(&k.ApprovalAbove)
		case "max_devices":
			err = value.Decode(&k.MaxDevices)
		default:
			return nil, fmt.Errorf("line %d: unknown field %q", n.Content[j].Line, field)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s", field, yamlMessage(err))
		}
	}

	if !validKeyID(k.ID) {
		return nil, fmt.Errorf("id: %q: want 1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit", k.ID, maxKeyID)
	}
	if publicKey == "" {
		return nil, errors.New("public_key: missing")
	}
	pub, err := ParsePublicKey(publicKey)
	if err != nil {
		return nil, fmt.Errorf("public_key: %w", err)
	}
	k.Public = pub
	if len(roles) == 0 {
		return nil, errors.New("roles: missing")
	}
	for _, r := range roles {
		role := Role(r)
		if !role.valid() {
			return nil, fmt.Errorf("roles: unknown role %q (want broadcast, register, approve or admin)", r)
		}
		if k.Has(role) {
			return nil, fmt.Errorf("roles: %q listed twice", r)
		}
		k.Roles = append(k.Roles, role)
	}
	for _, t := range k.Topics {
		if _, err := path.Match(t, ""); t == "" || err != nil {
			return nil, fmt.Errorf("topics: %q is not a valid pattern", t)
		}
	}
	if k.MaxAudience < 0 {
		return nil, fmt.Errorf("max_audience: %d is negative", k.MaxAudience)
	}
	if k.Has(RoleBroadcast) && k.MaxAudience == 0 {
		return nil, errors.New("max_audience: required for a key with the broadcast role")
	}
	if k.Rate, err = ParseRate(rate); err != nil {
		return nil, fmt.Errorf("rate: %w", err)
	}
	switch {
	case k.Owner == "":
		k.Owner = k.ID
	case len(k.Owner) > 128 || strings.ContainsFunc(k.Owner, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return nil, errors.New("owner: want 1 to 128 printable characters")
	}
	if k.Reach, err = ParseRate(reach); err != nil {
		return nil, fmt.Errorf("reach: %w", err)
	}
	if k.Reach == (Rate{}) && k.Has(RoleBroadcast) {
		k.Reach = Rate{Count: k.MaxAudience, Per: DefaultReachWindow}
	}
	if k.ApprovalAbove < 0 {
		return nil, fmt.Errorf("approval_above: %d is negative", k.ApprovalAbove)
	}
	if k.MaxDevices < 0 {
		return nil, fmt.Errorf("max_devices: %d is negative", k.MaxDevices)
	}
	return &k, nil
}

// KeyEntry is one key of a keyring file as it is written: what keygen
// appends and the local stack writes. ParseKeyring is the judge of a valid
// entry.
type KeyEntry struct {
	ID          string   `yaml:"id"`
	PublicKey   string   `yaml:"public_key"`
	Roles       []string `yaml:"roles,flow"`
	Topics      []string `yaml:"topics,flow,omitempty"`
	MaxAudience int      `yaml:"max_audience,omitempty"`
	Rate        string   `yaml:"rate,omitempty"`
	Owner       string   `yaml:"owner,omitempty"`
	Reach       string   `yaml:"reach,omitempty"`
	// ApprovalAbove and MaxDevices are omitted when zero.
	ApprovalAbove int `yaml:"approval_above,omitempty"`
	MaxDevices    int `yaml:"max_devices,omitempty"`
}

// MarshalKeyring writes entries as a keyring document: "keys:" followed by
// one list item per entry, indented by two spaces.
func MarshalKeyring(entries []KeyEntry) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(entries); err != nil {
		return nil, fmt.Errorf("encode keyring: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode keyring: %w", err)
	}
	out := []byte("keys:\n")
	for line := range strings.Lines(buf.String()) {
		out = append(out, "  "...)
		out = append(out, line...)
	}
	return out, nil
}

// EncodePublicKey returns pub in the compact form a keyring's public_key
// takes: base64 of its SPKI DER, the body of its PEM on one line.
func EncodePublicKey(pub ed25519.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("marshal public key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// validKeyID reports whether id is a usable key id: it appears in file
// names, Redis keys and logs, so it is kept to a safe alphabet.
func validKeyID(id string) bool {
	if id == "" || len(id) > maxKeyID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if isAlpha(c) || isDigit(c) || i > 0 && (c == '.' || c == '_' || c == '-') {
			continue
		}
		return false
	}
	return true
}

// yamlMessage returns err's message on one line: yaml.v3 puts each
// unmarshal error on its own line, and quotes the offending input, which
// may hold line breaks of its own.
func yamlMessage(err error) string {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msg = strings.Join(te.Errors, "; ")
	}
	return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(msg)
}
