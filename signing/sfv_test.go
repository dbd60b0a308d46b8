package signing

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestParseDictionary(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string // canonical serialisation
	}{
		// Examples from RFC 8941.
		{"strings and bytes (3.2)", `en="Applepie", da=:w4ZibGV0w6ZydGUK:`, `en="Applepie", da=:w4ZibGV0w6ZydGUK:`},
		{"booleans and params (3.2)", `a=?0, b, c; foo=bar`, `a=?0, b, c;foo=bar`},
		{"decimal and inner list (3.2)", `rating=1.5, feelings=(joy sadness)`, `rating=1.5, feelings=(joy sadness)`},
		{"mixed (3.2)", `a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid`, `a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid`},
		{"token with colon and slash (3.3.4)", `t=foo123/456`, `t=foo123/456`},
		{"empty", ``, ``},
		{"leading spaces", `   a=1`, `a=1`},
		{"OWS around commas", "a=1 ,\tb=2", `a=1, b=2`},
		{"duplicate key: first position, last value", `a=1, b=2, a=3`, `a=3, b=2`},
		{"duplicate parameter", `a;x=1;y=2;x=3`, `a;x=3;y=2`},
		{"escapes", `s="a\"b\\c"`, `s="a\"b\\c"`},
		{"true boolean parameter", `a=1;p=?1`, `a=1;p`},
		{"explicit true member", `a=?1;p`, `a;p`},
		{"negative integer", `n=-42`, `n=-42`},
		{"minus zero", `n=-0`, `n=0`},
		{"15-digit integer", `n=999999999999999`, `n=999999999999999`},
		{"decimal trailing zeros", `d=1.500, e=-0.050`, `d=1.5, e=-0.05`},
		{"decimal 12 integer digits", `d=123456789012.123`, `d=123456789012.123`},
		{"empty inner list with params", `l=();p=1`, `l=();p=1`},
		{"inner list with inner spaces", `l=(  1   2  )`, `l=(1 2)`},
		{"byte sequence without padding", `b=:YQ:`, `b=:YQ==:`},
		{"empty byte sequence", `b=::`, `b=::`},
		{"star key and token", `*a=*b`, `*a=*b`},
		{"signature-input", `sig1=("@method" "@path");created=1618884473;keyid="test-key-ed25519"`,
			`sig1=("@method" "@path");created=1618884473;keyid="test-key-ed25519"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := parseDictionary(tt.give)
			if err != nil {
				t.Fatalf("parseDictionary(%q): %v", tt.give, err)
			}
			got, err := appendDictionary(nil, d)
			if err != nil {
				t.Fatalf("appendDictionary: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("parseDictionary(%q) serialises as %q, want %q", tt.give, got, tt.want)
			}
		})
	}
}

func TestParseDictionaryValues(t *testing.T) {
	d, err := parseDictionary(`i=-7, d=2.25, s="x", t=tok, b=:AQI=:, f=?0, l=(1 "a");q=1`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]sfValue{
		"i": sfInt(-7),
		"d": sfDec(2250),
		"s": sfStr("x"),
		"t": sfTok("tok"),
		"f": sfBool(false),
	}
	for k, w := range want {
		if v, _ := lookup(d, k); v.sfValue.kind != w.kind || v.num != w.num || v.str != w.str {
			t.Errorf("%s = %#v, want %#v", k, v.sfValue, w)
		}
	}
	if v, _ := lookup(d, "b"); v.kind != sfBytes || !bytes.Equal(v.bin, []byte{1, 2}) {
		t.Errorf("b = %#v", v.sfValue)
	}
	l, _ := lookup(d, "l")
	if !l.list || len(l.items) != 2 || l.items[0].kind != sfInteger || l.items[0].num != 1 || l.items[1].str != "a" {
		t.Errorf("l = %#v", l)
	}
	if q, _ := l.params.get("q"); q.kind != sfInteger || q.num != 1 {
		t.Errorf("l;q = %#v", q)
	}
}

func TestParseDictionaryRejects(t *testing.T) {
	tests := []struct {
		name string
		give string
	}{
		{"trailing comma", `a=1,`},
		{"missing comma", `a=1 b=2`},
		{"uppercase key", `A=1`},
		{"key starting with digit", `1a=1`},
		{"16-digit integer", `n=1234567890123456`},
		{"13 integer digits in decimal", `d=1234567890123.1`},
		{"four fractional digits", `d=1.1234`},
		{"decimal ending in dot", `d=1.`},
		{"lone minus", `n=-`},
		{"minus letter", `n=-a`},
		{"unterminated string", `s="abc`},
		{"bad escape", `s="a\x"`},
		{"escape at end", `s="a\`},
		{"control character in string", "s=\"a\tb\""},
		{"non-ASCII in string", "s=\"caf\xc3\xa9\""},
		{"unterminated byte sequence", `b=:YQ==`},
		{"bad base64 character", `b=:Y*Q=:`},
		{"base64 one char", `b=:Y:`},
		{"bad boolean", `f=?2`},
		{"boolean at end", `f=?`},
		{"unterminated inner list", `l=(1 2`},
		{"inner list without space", `l=(1"a")`},
		{"nested inner list", `l=((1))`},
		{"parameter without key", `a=1;`},
		{"parameter uppercase key", `a=1;K=2`},
		{"empty value", `a=`},
		{"leading tab", "\ta=1"},
		{"non-ASCII key", "\xc3\xa9=1"},
		{"trailing garbage", `a=1 x`},
		{"only comma", `,`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d, err := parseDictionary(tt.give); err == nil {
				t.Errorf("parseDictionary(%q) = %v, want an error", tt.give, d)
			}
		})
	}
}

func TestAppendBareItemRejects(t *testing.T) {
	tests := []struct {
		name string
		give sfValue
	}{
		{"integer too large", sfInt(1_000_000_000_000_000)},
		{"decimal too large", sfDec(1_000_000_000_000_000)},
		{"string with newline", sfStr("a\nb")},
		{"string non-ASCII", sfStr("café")},
		{"token starting with digit", sfTok("1a")},
		{"token with space", sfTok("a b")},
		{"empty token", sfTok("")},
		{"no kind", sfValue{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := appendBareItem(nil, tt.give); err == nil {
				t.Errorf("appendBareItem(%#v) = %q, want an error", tt.give, got)
			}
		})
	}
}

// FuzzParseDictionary checks that the parser never panics on any input,
// stays within its limits with work bounded by the elements it parsed
// (never their square), and that whatever it accepts serialises to a
// canonical form that parses back to the same serialisation.
func FuzzParseDictionary(f *testing.F) {
	for _, s := range []string{
		``,
		`en="Applepie", da=:w4ZibGV0w6ZydGUK:`,
		`a=?0, b, c; foo=bar`,
		`rating=1.5, feelings=(joy sadness)`,
		`a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid`,
		`sig1=("@method" "@authority" "@path" "content-digest");created=1618884473;keyid="test-key-ed25519";alg="ed25519";nonce="abc";tag="pushgate"`,
		`sig1=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:`,
		`sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:YQ:`,
		`s="a\"b\\c", n=-999999999999999, d=-123456789012.125, t=*x/y:z`,
		`a=1;b;c=?0;d="";e=::;f=tok`,
		// At and just over each limit.
		uniqueParams(maxParams),
		uniqueParams(maxParams + 1),
		manyMembers(maxMembers),
		manyMembers(maxMembers + 1),
		`l=(` + strings.TrimSpace(strings.Repeat("1 ", maxInnerItems)) + `)`,
		`l=(` + strings.TrimSpace(strings.Repeat("1 ", maxInnerItems+1)) + `)`,
		strings.Repeat("k", maxKeyLen) + `=1`,
		strings.Repeat("k", maxKeyLen+1) + `=1`,
		worstSignatureInput(),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := parseDictionary(s); len(s) > maxFieldLen && err == nil {
			t.Fatalf("accepted a field of %d bytes", len(s))
		}
		// The other limits hold whatever the length.
		p := sfParser{s: s}
		d, err := p.dictionary()
		if p.compared > maxMembers*p.elements {
			t.Fatalf("%d key comparisons for %d elements: more than %d each", p.compared, p.elements, maxMembers)
		}
		if err != nil {
			return
		}
		checkLimits(t, d)
		first, err := appendDictionary(nil, d)
		if err != nil {
			t.Fatalf("parsed %q but cannot serialise it: %v", s, err)
		}
		// The canonical form may be longer than the input (", " between
		// members, base64 padding): parse it without the length limit.
		p2 := sfParser{s: string(first)}
		d2, err := p2.dictionary()
		if err != nil {
			t.Fatalf("serialisation %q of %q does not parse: %v", first, s, err)
		}
		second, err := appendDictionary(nil, d2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("unstable: %q -> %q -> %q", s, first, second)
		}
	})
}

// checkLimits fails unless d is within the parser's limits.
func checkLimits(t *testing.T, d []sfMember) {
	t.Helper()
	if len(d) > maxMembers {
		t.Fatalf("%d members", len(d))
	}
	params := func(ps sfParams) {
		if len(ps) > maxParams {
			t.Fatalf("%d parameters", len(ps))
		}
		for _, p := range ps {
			if len(p.key) > maxKeyLen {
				t.Fatalf("parameter key of %d bytes", len(p.key))
			}
		}
	}
	for _, m := range d {
		if len(m.key) > maxKeyLen {
			t.Fatalf("member key of %d bytes", len(m.key))
		}
		if len(m.val.items) > maxInnerItems {
			t.Fatalf("inner list of %d items", len(m.val.items))
		}
		params(m.val.params)
		for _, it := range m.val.items {
			params(it.params)
		}
	}
}

// uniqueParams is a member with n parameters of distinct keys.
func uniqueParams(n int) string {
	var b strings.Builder
	b.WriteString("m=()")
	for i := range n {
		fmt.Fprintf(&b, ";p%d", i)
	}
	return b.String()
}

// manyMembers is a dictionary of n members with distinct keys.
func manyMembers(n int) string {
	ms := make([]string, n)
	for i := range ms {
		ms[i] = fmt.Sprintf("m%d=%d", i, i)
	}
	return strings.Join(ms, ", ")
}

func TestParseDictionaryLimits(t *testing.T) {
	tests := []struct {
		name string
		give string
		ok   bool
	}{
		{"parameters at the limit", uniqueParams(maxParams), true},
		{"parameters over the limit", uniqueParams(maxParams + 1), false},
		{"repeated parameters count towards the elements", "m=()" + strings.Repeat(";p", maxElements), false},
		{"members at the limit", manyMembers(maxMembers), true},
		{"members over the limit", manyMembers(maxMembers + 1), false},
		{"inner list at the limit", `l=(` + strings.TrimSpace(strings.Repeat("1 ", maxInnerItems)) + `)`, true},
		{"inner list over the limit", `l=(` + strings.TrimSpace(strings.Repeat("1 ", maxInnerItems+1)) + `)`, false},
		{"key at the limit", strings.Repeat("k", maxKeyLen) + `=1`, true},
		{"key over the limit", strings.Repeat("k", maxKeyLen+1) + `=1`, false},
		{"parameter key over the limit", `a=1;` + strings.Repeat("k", maxKeyLen+1), false},
		{"field at the limit", `s="` + strings.Repeat("x", maxFieldLen-len(`s=""`)) + `"`, true},
		{"field over the limit", `s="` + strings.Repeat("x", maxFieldLen-len(`s=""`)+1) + `"`, false},
		{"the worst Signature-Input the limits allow", worstSignatureInput(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := parseDictionary(tt.give)
			if (err == nil) != tt.ok {
				t.Fatalf("parseDictionary = %v, want ok %t", err, tt.ok)
			}
			if err == nil {
				checkLimits(t, d)
			}
		})
	}
}

// TestParseWorkIsLinear checks that parsing costs work in proportion to
// the field, not to its square: a field of unique parameters, the input
// that made every insert scan all the keys before it, is cut off at the
// limits with key comparisons bounded by a constant per element.
func TestParseWorkIsLinear(t *testing.T) {
	for _, n := range []int{10, 100, 1000, 20000} {
		s := uniqueParams(n)
		p := sfParser{s: s}
		_, err := p.dictionary()
		if n > maxParams && err == nil {
			t.Errorf("%d parameters accepted", n)
		}
		if p.compared > maxParams*p.elements || p.elements > maxElements+1 {
			t.Errorf("%d parameters: %d comparisons over %d elements", n, p.compared, p.elements)
		}
	}
}
