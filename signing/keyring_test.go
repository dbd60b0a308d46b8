package signing

import (
	"bytes"
	"encoding/base64"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// rfcPub is RFC 9421's test-key-ed25519 public key in its three accepted
// forms.
var (
	rfcPubRaw    = "JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs="
	rfcPubSPKI   = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs="
	rfcPubPEM    = "-----BEGIN PUBLIC KEY-----\n" + rfcPubSPKI + "\n-----END PUBLIC KEY-----\n"
	rfcPubBlock  = "    public_key: |\n      -----BEGIN PUBLIC KEY-----\n      " + rfcPubSPKI + "\n      -----END PUBLIC KEY-----\n"
	rfcPubInline = "    public_key: " + rfcPubSPKI + "\n"
)

func TestParseKeyring(t *testing.T) {
	doc := "keys:\n" +
		"  - id: city-alerts\n" + rfcPubBlock +
		"    roles: [broadcast, register]\n" +
		"    topics: [\"citizens\", \"district-*\"]\n" +
		"    max_audience: 100000\n" +
		"    rate: 6000/min\n" +
		"  - id: ops.admin_1\n" +
		"    public_key: " + rfcPubRaw + "\n" +
		"    roles: [admin, approve]\n" +
		"    topics: [\"*\"]\n"
	kr, err := ParseKeyring([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if ids := []string{kr.Keys()[0].ID, kr.Keys()[1].ID}; !slices.Equal(ids, []string{"city-alerts", "ops.admin_1"}) {
		t.Errorf("ids = %q", ids)
	}
	k, ok := kr.Lookup("city-alerts")
	if !ok {
		t.Fatal("city-alerts not found")
	}
	want, _ := base64.StdEncoding.DecodeString(rfcPubRaw)
	if !bytes.Equal(k.Public, want) {
		t.Errorf("public key = %x, want %x", k.Public, want)
	}
	if k.MaxAudience != 100000 || k.Rate != (Rate{6000, time.Minute}) {
		t.Errorf("limits = %d, %v", k.MaxAudience, k.Rate)
	}
	checks := []struct {
		name string
		got  bool
		want bool
	}{
		{"has broadcast", k.Has(RoleBroadcast), true},
		{"has admin", k.Has(RoleAdmin), false},
		{"topic citizens", k.AllowsTopic("citizens"), true},
		{"topic district-7", k.AllowsTopic("district-7"), true},
		{"topic district", k.AllowsTopic("district"), false},
		{"topic citizens-x", k.AllowsTopic("citizens-x"), false},
		{"all", k.AllowsAll(), false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	admin, _ := kr.Lookup("ops.admin_1")
	if !admin.AllowsAll() || !admin.AllowsTopic("anything") || admin.Rate != (Rate{}) {
		t.Errorf("admin key: all %v, rate %v", admin.AllowsAll(), admin.Rate)
	}
	if _, ok := kr.Lookup("nobody"); ok {
		t.Error("Lookup(nobody) found a key")
	}
	// Keys returns a copy: the keyring stays immutable.
	kr.Keys()[0] = nil
	if kr.Keys()[0] == nil {
		t.Error("Keys exposes the keyring's slice")
	}
}

func TestKeyringOwnerReachAndLimits(t *testing.T) {
	kr, err := ParseKeyring([]byte("keys:\n" +
		"  - id: city-alerts\n" + rfcPubInline + "    roles: [broadcast, register]\n    topics: [citizens]\n    max_audience: 5000\n" +
		"  - id: district-9\n" + rfcPubInline + "    roles: [broadcast]\n    owner: kelurahan-9\n    topics: [district-9*]\n    max_audience: 20\n    reach: 100/24h\n    approval_above: 10\n" +
		"  - id: registrar\n" + rfcPubInline + "    roles: [register]\n    topics: [district-9*]\n    max_devices: 1000\n"))
	if err != nil {
		t.Fatal(err)
	}
	city, _ := kr.Lookup("city-alerts")
	if city.Owner != "city-alerts" || city.Reach != (Rate{5000, 24 * time.Hour}) || city.ApprovalAbove != 0 {
		t.Errorf("city-alerts = owner %q reach %v approval_above %d; want its id, max_audience per 24h and 0", city.Owner, city.Reach, city.ApprovalAbove)
	}
	d9, _ := kr.Lookup("district-9")
	if d9.Owner != "kelurahan-9" || d9.Reach != (Rate{100, 24 * time.Hour}) || d9.ApprovalAbove != 10 {
		t.Errorf("district-9 = owner %q reach %v approval_above %d", d9.Owner, d9.Reach, d9.ApprovalAbove)
	}
	reg, _ := kr.Lookup("registrar")
	if reg.MaxDevices != 1000 || reg.Reach != (Rate{}) || !reg.AllowsTopic("district-9a") || reg.AllowsTopic("citizens") {
		t.Errorf("registrar = %+v", reg)
	}
}

func TestParseKeyringErrors(t *testing.T) {
	entry := func(lines ...string) string {
		return "keys:\n  - " + strings.Join(lines, "\n    ") + "\n"
	}
	pub := "public_key: " + rfcPubSPKI
	tests := []struct {
		name string
		give string
		want string
	}{
		{"empty", "", "keyring: empty document"},
		{"no keys list", "other: 1\n", "field other not found"},
		{"keys missing", "# nothing\n{}\n", "keyring: no keys list"},
		{"two documents", "keys: []\n---\nkeys: []\n", "more than one YAML document"},
		{"not YAML", "keys: [\n", "keyring: yaml:"},
		{"entry not a mapping", "keys:\n  - just-a-string\n", `keyring: key #1: line 2: want a mapping`},
		{"unknown field", entry("id: a", pub, "roles: [admin]", "colour: red"), `keyring: key "a": line 5: unknown field "colour"`},
		{"repeated field", entry("id: a", pub, "roles: [admin]", "roles: [admin]"), `keyring: key "a": roles: repeated`},
		{"missing id", entry(pub, "roles: [admin]"), `keyring: key #1: id: "": want 1 to 64`},
		{"bad id", entry("id: a/b", pub, "roles: [admin]"), `keyring: key #1: id: "a/b": want`},
		{"id starting with dot", entry("id: .a", pub, "roles: [admin]"), `keyring: key #1: id: ".a"`},
		{"duplicate id", entry("id: a", pub, "roles: [admin]") + "  - id: a\n    " + pub + "\n    roles: [admin]\n", `keyring: key "a": id: duplicate`},
		{"missing key", entry("id: a", "roles: [admin]"), `keyring: key "a": public_key: missing`},
		{"bad key", entry("id: a", "public_key: not-base64!", "roles: [admin]"), `keyring: key "a": public_key: not PEM and not valid base64`},
		{"short key", entry("id: a", "public_key: AAAA", "roles: [admin]"), `keyring: key "a": public_key: want an Ed25519 key`},
		{"RSA PEM label", entry("id: a", "public_key: \"-----BEGIN RSA PUBLIC KEY-----\\nAAAA\\n-----END RSA PUBLIC KEY-----\\n\"", "roles: [admin]"), `keyring: key "a": public_key: PEM block is "RSA PUBLIC KEY", want PUBLIC KEY (SPKI)`},
		{"no roles", entry("id: a", pub), `keyring: key "a": roles: missing`},
		{"unknown role", entry("id: a", pub, "roles: [root]"), `keyring: key "a": roles: unknown role "root"`},
		{"role twice", entry("id: a", pub, "roles: [admin, admin]"), `keyring: key "a": roles: "admin" listed twice`},
		{"roles not a list", entry("id: a", pub, "roles: admin"), `keyring: key "a": roles: line 4: cannot unmarshal`},
		{"bad topic pattern", entry("id: a", pub, "roles: [admin]", "topics: [\"district-[\"]"), `keyring: key "a": topics: "district-[" is not a valid pattern`},
		{"empty topic", entry("id: a", pub, "roles: [admin]", "topics: [\"\"]"), `keyring: key "a": topics: "" is not a valid pattern`},
		{"broadcast without max_audience", entry("id: a", pub, "roles: [broadcast]"), `keyring: key "a": max_audience: required for a key with the broadcast role`},
		{"negative max_audience", entry("id: a", pub, "roles: [admin]", "max_audience: -1"), `keyring: key "a": max_audience: -1 is negative`},
		{"max_audience not a number", entry("id: a", pub, "roles: [admin]", "max_audience: lots"), `keyring: key "a": max_audience: line 5: cannot unmarshal`},
		{"bad rate unit", entry("id: city-alerts", pub, "roles: [broadcast]", "max_audience: 10", "rate: 6000/fortnight"), `keyring: key "city-alerts": rate: "6000/fortnight": the period must be s, min, h or d`},
		{"rate without unit", entry("id: a", pub, "roles: [admin]", "rate: 6000"), `keyring: key "a": rate: "6000": want COUNT/PERIOD`},
		{"zero rate", entry("id: a", pub, "roles: [admin]", "rate: 0/s"), `keyring: key "a": rate: "0/s": count must be a positive integer`},
		{"bad reach", entry("id: a", pub, "roles: [broadcast]", "max_audience: 10", "reach: lots"), `keyring: key "a": reach: "lots": want COUNT/PERIOD`},
		{"owner with a line break", entry("id: a", pub, "roles: [approve]", `owner: "x\ny"`), `keyring: key "a": owner: want 1 to 128 printable characters`},
		{"negative approval_above", entry("id: a", pub, "roles: [broadcast]", "max_audience: 10", "approval_above: -5"), `keyring: key "a": approval_above: -5 is negative`},
		{"negative max_devices", entry("id: a", pub, "roles: [register]", "max_devices: -1"), `keyring: key "a": max_devices: -1 is negative`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeyring([]byte(tt.give))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseKeyring error = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestLoadKeyring(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keyring.yaml")
	if err := os.WriteFile(file, []byte("keys:\n  - id: a\n"+rfcPubInline+"    roles: [register]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, err := LoadKeyring(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := kr.Lookup("a"); !ok {
		t.Error("key a missing")
	}
	if _, err := LoadKeyring(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("LoadKeyring(missing) = %v, want an error naming the file", err)
	}
}

func TestRate(t *testing.T) {
	tests := []struct {
		give string
		want Rate
	}{
		{"", Rate{}},
		{"100/s", Rate{100, time.Second}},
		{"6000/min", Rate{6000, time.Minute}},
		{"360000/h", Rate{360000, time.Hour}},
		{"200000/24h", Rate{200000, 24 * time.Hour}},
		{"500/15min", Rate{500, 15 * time.Minute}},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.give)
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %v, %v, want %v", tt.give, got, err, tt.want)
		}
		if s := got.String(); s != tt.give {
			t.Errorf("%v.String() = %q, want %q", got, s, tt.give)
		}
	}
	if r, err := ParseRate("1000000/d"); err != nil || r != (Rate{1000000, 24 * time.Hour}) || r.String() != "1000000/24h" {
		t.Errorf("ParseRate(1000000/d) = %v (%s), %v", r, r, err)
	}
	var r Rate
	if err := r.UnmarshalText([]byte("5/s")); err != nil || r != (Rate{5, time.Second}) {
		t.Errorf("UnmarshalText = %v, %v", r, err)
	}
	for _, bad := range []string{"5", "x/s", "-1/s", "5/sec", "5/", "/s", "1.5/s", "5/0h", "5/01h", "5/-2h", "5/2000h", "5/1.5h"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) succeeded", bad)
		}
	}
}

func TestParsePublicKey(t *testing.T) {
	want, _ := base64.StdEncoding.DecodeString(rfcPubRaw)
	for _, give := range []string{rfcPubRaw, rfcPubSPKI, rfcPubPEM, "  " + rfcPubPEM + "\n"} {
		got, err := ParsePublicKey(give)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("ParsePublicKey(%q) = %x, %v", give, got, err)
		}
	}
	for _, bad := range []string{"", "AAAA", "%%%", rfcPubPEM + rfcPubPEM, strings.ReplaceAll(rfcPubPEM, "PUBLIC KEY", "PRIVATE KEY")} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", bad)
		}
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := MarshalPrivateKeyPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	gotPriv, err := ParsePrivateKeyPEM(privPEM)
	if err != nil || !gotPriv.Equal(priv) {
		t.Fatalf("ParsePrivateKeyPEM = %v", err)
	}
	gotPub, err := ParsePublicKey(string(pubPEM))
	if err != nil || !gotPub.Equal(pub) {
		t.Fatalf("ParsePublicKey = %v", err)
	}
	for _, bad := range [][]byte{nil, []byte("junk"), pubPEM, bytes.Replace(privPEM, []byte("MC4C"), []byte("MC4D"), 1)} {
		_, err := ParsePrivateKeyPEM(bad)
		if err == nil {
			t.Errorf("ParsePrivateKeyPEM(%q) succeeded", bad)
		} else if strings.Contains(err.Error(), string(privPEM[30:50])) {
			t.Errorf("error quotes key material: %v", err)
		}
	}
}

func TestMarshalKeyringParses(t *testing.T) {
	pub, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := EncodePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := MarshalKeyring([]KeyEntry{
		{ID: "city-alerts", PublicKey: enc, Roles: []string{"broadcast"}, Topics: []string{"citizens", "district-*"}, MaxAudience: 100, Rate: "60/min"},
		{ID: "ops-admin", PublicKey: enc, Roles: []string{"admin"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	kr, err := ParseKeyring(doc)
	if err != nil {
		t.Fatalf("ParseKeyring(MarshalKeyring(...)): %v\n%s", err, doc)
	}
	k, ok := kr.Lookup("city-alerts")
	if !ok || !k.Public.Equal(pub) || !k.AllowsTopic("district-9") || k.MaxAudience != 100 || k.Rate != (Rate{60, time.Minute}) {
		t.Fatalf("key = %+v, want the entry written", k)
	}
	if a, ok := kr.Lookup("ops-admin"); !ok || !a.Has(RoleAdmin) {
		t.Fatalf("admin = %+v", a)
	}
}

// FuzzParseKeyring feeds arbitrary documents to the keyring parser, which
// reads an operator's file: nothing panics, errors are one line, and every
// key it accepts is usable — a valid id, a 32-byte public key, known
// roles, valid topic patterns, a cap for broadcast keys.
func FuzzParseKeyring(f *testing.F) {
	pub := "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs="
	for _, seed := range []string{
		"keys:\n  - id: a\n    public_key: " + pub + "\n    roles: [broadcast]\n    topics: [\"c*\"]\n    max_audience: 5\n    rate: 10/s\n",
		"keys:\n  - id: a\n    public_key: " + pub + "\n    roles: [admin]\n  - id: a\n    public_key: " + pub + "\n    roles: [admin]\n",
		"keys:\n  - id: a\n    public_key: " + pub + "\n    roles: [broadcast]\n",
		"keys:\n  - id: a\n    public_key: x\n    roles: [admin]\n",
		"keys:\n  - id: a\n    public_key: " + pub + "\n    roles: [root]\n",
		"keys:\n  - id: a\n    public_key: " + pub + "\n    roles: [admin]\n    topics: [\"[\"]\n",
		"keys: []\n", "keys:\n", "", "---\n---\n", "keys: {a: 1}\n", "keys:\n  - [1, 2]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		kr, err := ParseKeyring(doc)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
			return
		}
		for _, k := range kr.Keys() {
			if !validKeyID(k.ID) || len(k.Public) != 32 || len(k.Roles) == 0 {
				t.Fatalf("accepted key %+v", k)
			}
			for _, r := range k.Roles {
				if !r.valid() {
					t.Fatalf("accepted role %q", r)
				}
			}
			for _, p := range k.Topics {
				if _, err := path.Match(p, ""); err != nil {
					t.Fatalf("accepted pattern %q", p)
				}
			}
			if k.Has(RoleBroadcast) && k.MaxAudience <= 0 {
				t.Fatalf("accepted broadcast key %s without max_audience", k.ID)
			}
			if got, ok := kr.Lookup(k.ID); !ok || got != k {
				t.Fatalf("Lookup(%q) does not find the key", k.ID)
			}
		}
	})
}
