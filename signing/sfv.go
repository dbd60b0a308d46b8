package signing

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// This file implements the parts of RFC 8941 (Structured Field Values) that
// Signature-Input, Signature and Content-Digest use: dictionaries whose
// members are items or inner lists, with parameters, over every bare item
// type. Parsing follows the RFC's algorithms step by step; serialisation is
// the RFC's canonical form, which RFC 9421 relies on for "@signature-params".
//
// The parser serves untrusted header fields before any signature is
// checked, so it is bounded: a field over one of the limits below is
// refused. RFC 8941 asks a general-purpose parser to accept far more
// (1024 members, 256 parameters); the three fields of a signed request
// need a fraction of that. Within the limits parsing is linear in the
// field's length: the one step that is not, the duplicate check of a new
// key against the keys before it in its dictionary or parameter list,
// scans at most maxMembers or maxParams keys of at most maxKeyLen bytes.
// BenchmarkVerifyWorstCase measures the worst field the limits allow.

// sfKind is the type of a bare item.
type sfKind uint8

const (
	sfInteger sfKind = iota + 1
	sfDecimal
	sfString
	sfToken
	sfBytes
	sfBoolean
)

// sfValue is a bare item. A struct rather than an interface, so that
// parsing a field does not box every string and integer on the heap.
type sfValue struct {
	kind sfKind
	num  int64  // integer; decimal in thousandths (exact: at most 3 fractional digits); boolean 0 or 1
	str  string // string or token
	bin  []byte // byte sequence
}

func sfInt(n int64) sfValue     { return sfValue{kind: sfInteger, num: n} }
func sfStr(s string) sfValue    { return sfValue{kind: sfString, str: s} }
func sfTok(s string) sfValue    { return sfValue{kind: sfToken, str: s} }
func sfBin(b []byte) sfValue    { return sfValue{kind: sfBytes, bin: b} }
func sfDec(milli int64) sfValue { return sfValue{kind: sfDecimal, num: milli} }

func sfBool(b bool) sfValue {
	if b {
		return sfValue{kind: sfBoolean, num: 1}
	}
	return sfValue{kind: sfBoolean}
}

func (v sfValue) isTrue() bool { return v.kind == sfBoolean && v.num == 1 }

// sfParam is one parameter; sfParams keeps them in order with unique keys.
type sfParam struct {
	key   string
	value sfValue
}

type sfParams []sfParam

// get returns the value of key.
func (ps sfParams) get(key string) (sfValue, bool) {
	for _, p := range ps {
		if p.key == key {
			return p.value, true
		}
	}
	return sfValue{}, false
}

// set overwrites an existing key in place, as the RFC's ordered maps do, or
// appends a new one.
func (ps sfParams) set(key string, v sfValue) sfParams {
	for i := range ps {
		if ps[i].key == key {
			ps[i].value = v
			return ps
		}
	}
	if ps == nil {
		// Signature-Input carries five or six parameters: one allocation.
		ps = make(sfParams, 0, 8)
	}
	return append(ps, sfParam{key, v})
}

// sfItem is an item, or, when list is true, an inner list of items; either
// with parameters. Inner lists only occur as dictionary members.
type sfItem struct {
	sfValue
	list   bool
	items  []sfItem
	params sfParams
}

// sfMember is one dictionary member.
type sfMember struct {
	key string
	val sfItem
}

// lookup returns the member named key.
func lookup(d []sfMember, key string) (sfItem, bool) {
	for _, m := range d {
		if m.key == key {
			return m.val, true
		}
	}
	return sfItem{}, false
}

const (
	maxSFInteger = 999_999_999_999_999
	maxSFDecimal = 999_999_999_999_999 // thousandths: 12 integer digits
)

// The limits of a parsed field. A pushgate signature is one member of
// about 250 bytes with six items and six parameters; other signatures a
// proxy adds, or another algorithm's longer values, fit many times over.
const (
	maxFieldLen   = 8 << 10 // bytes of a field value, its lines joined
	maxMembers    = 32      // members of a dictionary
	maxParams     = 16      // parameters of one item or inner list (RFC 9421 defines six)
	maxInnerItems = 32      // items of one inner list
	maxElements   = 128     // members, inner-list items and parameters of a field, duplicates included
	maxKeyLen     = 64      // bytes of a key
)

var errSFInput = errors.New("invalid structured field")

// sfParser walks a field value. It works on a string so that keys, tokens
// and unescaped strings are substrings of the input, not copies.
type sfParser struct {
	s string
	i int
	// elements counts the members, inner-list items and parameters
	// parsed, against maxElements.
	elements int
	// compared counts the keys the duplicate checks compared a new key
	// with: the work that would grow with the square of the field
	// without the limits, which tests bound.
	compared int
}

// element counts one more member, item or parameter.
func (p *sfParser) element() error {
	p.elements++
	if p.elements > maxElements {
		return p.fail("more than " + strconv.Itoa(maxElements) + " members, items and parameters")
	}
	return nil
}

func (p *sfParser) done() bool { return p.i >= len(p.s) }

func (p *sfParser) fail(what string) error {
	return errors.New(what + " at offset " + strconv.Itoa(p.i))
}

func (p *sfParser) skipSP() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// errFieldTooLong refuses a field over maxFieldLen before it is parsed.
var errFieldTooLong = errors.New("field is over " + strconv.Itoa(maxFieldLen) + " bytes")

// parseDictionary parses a Dictionary field value (RFC 8941 4.2 and 4.2.2)
// within the limits above. An empty value is an empty dictionary.
// Duplicate keys keep the first position and the last value.
func parseDictionary(s string) ([]sfMember, error) {
	if len(s) > maxFieldLen {
		return nil, errFieldTooLong
	}
	p := sfParser{s: s}
	return p.dictionary()
}

// dictionary parses the rest of the input as a dictionary.
func (p *sfParser) dictionary() ([]sfMember, error) {
	p.skipSP()
	var d []sfMember
	for !p.done() {
		if err := p.element(); err != nil {
			return nil, err
		}
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		var v sfItem
		if !p.done() && p.s[p.i] == '=' {
			p.i++
			v, err = p.itemOrInnerList()
		} else {
			v.sfValue = sfBool(true)
			v.params, err = p.parameters()
		}
		if err != nil {
			return nil, err
		}
		p.compared += len(d)
		if d = setMember(d, key, v); len(d) > maxMembers {
			return nil, p.fail("more than " + strconv.Itoa(maxMembers) + " members")
		}
		p.skipOWS()
		if p.done() {
			return d, nil
		}
		if p.s[p.i] != ',' {
			return nil, p.fail("expected comma")
		}
		p.i++
		p.skipOWS()
		if p.done() {
			return nil, p.fail("trailing comma")
		}
	}
	return d, nil
}

func setMember(d []sfMember, key string, v sfItem) []sfMember {
	for i := range d {
		if d[i].key == key {
			d[i].val = v
			return d
		}
	}
	return append(d, sfMember{key, v})
}

func (p *sfParser) itemOrInnerList() (sfItem, error) {
	if !p.done() && p.s[p.i] == '(' {
		return p.innerList()
	}
	return p.item()
}

func (p *sfParser) innerList() (sfItem, error) {
	p.i++ // '('
	items := make([]sfItem, 0, 8)
	for !p.done() {
		p.skipSP()
		if p.done() {
			break
		}
		if p.s[p.i] == ')' {
			p.i++
			params, err := p.parameters()
			return sfItem{list: true, items: items, params: params}, err
		}
		if len(items) == maxInnerItems {
			return sfItem{}, p.fail("more than " + strconv.Itoa(maxInnerItems) + " items in an inner list")
		}
		if err := p.element(); err != nil {
			return sfItem{}, err
		}
		it, err := p.item()
		if err != nil {
			return sfItem{}, err
		}
		items = append(items, it)
		if p.done() {
			break
		}
		if c := p.s[p.i]; c != ' ' && c != ')' {
			return sfItem{}, p.fail("expected space or ')' in inner list")
		}
	}
	return sfItem{}, p.fail("unterminated inner list")
}

func (p *sfParser) item() (sfItem, error) {
	v, err := p.bareItem()
	if err != nil {
		return sfItem{}, err
	}
	params, err := p.parameters()
	return sfItem{sfValue: v, params: params}, err
}

func (p *sfParser) parameters() (sfParams, error) {
	var ps sfParams
	for !p.done() && p.s[p.i] == ';' {
		p.i++
		p.skipSP()
		if err := p.element(); err != nil {
			return nil, err
		}
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		v := sfBool(true)
		if !p.done() && p.s[p.i] == '=' {
			p.i++
			if v, err = p.bareItem(); err != nil {
				return nil, err
			}
		}
		p.compared += len(ps)
		if ps = ps.set(key, v); len(ps) > maxParams {
			return nil, p.fail("more than " + strconv.Itoa(maxParams) + " parameters")
		}
	}
	return ps, nil
}

func isLCAlpha(c byte) bool { return 'a' <= c && c <= 'z' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool   { return '0' <= c && c <= '9' }

func isKeyChar(c byte) bool {
	return isLCAlpha(c) || isDigit(c) || c == '_' || c == '-' || c == '.' || c == '*'
}

// isTChar reports whether c is an RFC 9110 tchar.
func isTChar(c byte) bool {
	if isAlpha(c) || isDigit(c) {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func (p *sfParser) key() (string, error) {
	if p.done() || !(isLCAlpha(p.s[p.i]) || p.s[p.i] == '*') {
		return "", p.fail("expected key")
	}
	start := p.i
	for p.i < len(p.s) && isKeyChar(p.s[p.i]) {
		p.i++
	}
	if p.i-start > maxKeyLen {
		return "", p.fail("key over " + strconv.Itoa(maxKeyLen) + " bytes")
	}
	return p.s[start:p.i], nil
}

func (p *sfParser) bareItem() (sfValue, error) {
	if p.done() {
		return sfValue{}, p.fail("expected item")
	}
	switch c := p.s[p.i]; {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		return p.str()
	case c == ':':
		return p.byteSeq()
	case c == '?':
		return p.boolean()
	case isAlpha(c) || c == '*':
		return p.token(), nil
	default:
		return sfValue{}, p.fail("unexpected character")
	}
}

func (p *sfParser) number() (sfValue, error) {
	neg := false
	if p.s[p.i] == '-' {
		neg = true
		p.i++
	}
	if p.done() || !isDigit(p.s[p.i]) {
		return sfValue{}, p.fail("expected digit")
	}
	start, dot := p.i, -1
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == '.' && dot < 0 {
			if p.i-start > 12 {
				return sfValue{}, p.fail("decimal has too many integer digits")
			}
			dot = p.i
		} else if !isDigit(c) {
			break
		}
		p.i++
		if n := p.i - start; dot < 0 && n > 15 || dot >= 0 && n > 16 {
			return sfValue{}, p.fail("number too long")
		}
	}
	if dot < 0 {
		n, err := strconv.ParseInt(p.s[start:p.i], 10, 64)
		if err != nil {
			return sfValue{}, p.fail("bad integer")
		}
		if neg {
			n = -n
		}
		return sfInt(n), nil
	}
	frac := p.s[dot+1 : p.i]
	if len(frac) == 0 || len(frac) > 3 {
		return sfValue{}, p.fail("decimal needs one to three fractional digits")
	}
	ip, err := strconv.ParseInt(p.s[start:dot], 10, 64)
	if err != nil {
		return sfValue{}, p.fail("bad decimal")
	}
	fp, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return sfValue{}, p.fail("bad decimal")
	}
	for range 3 - len(frac) {
		fp *= 10
	}
	m := ip*1000 + fp
	if neg {
		m = -m
	}
	return sfDec(m), nil
}

func (p *sfParser) str() (sfValue, error) {
	p.i++ // '"'
	start := p.i
	var b []byte // nil until the first escape: most strings are substrings
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '\\':
			if b == nil {
				b = append([]byte(nil), p.s[start:p.i]...)
			}
			p.i++
			if p.done() || p.s[p.i] != '"' && p.s[p.i] != '\\' {
				return sfValue{}, p.fail("bad escape in string")
			}
			b = append(b, p.s[p.i])
		case c == '"':
			p.i++
			if b == nil {
				return sfStr(p.s[start : p.i-1]), nil
			}
			return sfStr(string(b)), nil
		case c < 0x20 || c > 0x7e:
			return sfValue{}, p.fail("non-printable character in string")
		case b != nil:
			b = append(b, c)
		}
		p.i++
	}
	return sfValue{}, p.fail("unterminated string")
}

func (p *sfParser) token() sfValue {
	start := p.i
	p.i++
	for p.i < len(p.s) && (isTChar(p.s[p.i]) || p.s[p.i] == ':' || p.s[p.i] == '/') {
		p.i++
	}
	return sfTok(p.s[start:p.i])
}

func (p *sfParser) byteSeq() (sfValue, error) {
	p.i++ // ':'
	end := strings.IndexByte(p.s[p.i:], ':')
	if end < 0 {
		return sfValue{}, p.fail("unterminated byte sequence")
	}
	b64 := p.s[p.i : p.i+end]
	for j := 0; j < len(b64); j++ {
		c := b64[j]
		if !isAlpha(c) && !isDigit(c) && c != '+' && c != '/' && c != '=' {
			return sfValue{}, p.fail("bad character in byte sequence")
		}
	}
	// RFC 8941 asks parsers to tolerate missing padding and non-zero pad
	// bits; the unpadded decoder in its default (non-strict) mode does both.
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil {
		return sfValue{}, p.fail("bad base64 in byte sequence")
	}
	p.i += end + 1
	return sfBin(b), nil
}

func (p *sfParser) boolean() (sfValue, error) {
	p.i++ // '?'
	if p.done() {
		return sfValue{}, p.fail("expected boolean")
	}
	c := p.s[p.i]
	p.i++
	switch c {
	case '1':
		return sfBool(true), nil
	case '0':
		return sfBool(false), nil
	}
	p.i--
	return sfValue{}, p.fail("expected boolean")
}

// appendDictionary serialises a dictionary (RFC 8941 4.1.2).
func appendDictionary(dst []byte, d []sfMember) ([]byte, error) {
	for i, m := range d {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		var err error
		if dst, err = appendMember(dst, m.key, m.val); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// appendMember serialises one dictionary member.
func appendMember(dst []byte, key string, v sfItem) ([]byte, error) {
	dst, err := appendKey(dst, key)
	if err != nil {
		return nil, err
	}
	if !v.list && v.isTrue() {
		return appendParams(dst, v.params)
	}
	dst = append(dst, '=')
	if v.list {
		return appendInnerList(dst, v.items, v.params)
	}
	return appendItem(dst, v)
}

func appendInnerList(dst []byte, items []sfItem, params sfParams) ([]byte, error) {
	dst = append(dst, '(')
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ' ')
		}
		var err error
		if dst, err = appendItem(dst, it); err != nil {
			return nil, err
		}
	}
	dst = append(dst, ')')
	return appendParams(dst, params)
}

func appendItem(dst []byte, it sfItem) ([]byte, error) {
	if it.list {
		return nil, errSFInput // inner lists do not nest
	}
	dst, err := appendBareItem(dst, it.sfValue)
	if err != nil {
		return nil, err
	}
	return appendParams(dst, it.params)
}

func appendParams(dst []byte, ps sfParams) ([]byte, error) {
	for _, p := range ps {
		dst = append(dst, ';')
		var err error
		if dst, err = appendKey(dst, p.key); err != nil {
			return nil, err
		}
		if p.value.isTrue() {
			continue
		}
		dst = append(dst, '=')
		if dst, err = appendBareItem(dst, p.value); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

func appendKey(dst []byte, key string) ([]byte, error) {
	if key == "" || !(isLCAlpha(key[0]) || key[0] == '*') {
		return nil, errSFInput
	}
	for i := 1; i < len(key); i++ {
		if !isKeyChar(key[i]) {
			return nil, errSFInput
		}
	}
	return append(dst, key...), nil
}

func appendBareItem(dst []byte, v sfValue) ([]byte, error) {
	switch v.kind {
	case sfInteger:
		if v.num < -maxSFInteger || v.num > maxSFInteger {
			return nil, errSFInput
		}
		return strconv.AppendInt(dst, v.num, 10), nil
	case sfDecimal:
		m := v.num
		if m < -maxSFDecimal || m > maxSFDecimal {
			return nil, errSFInput
		}
		if m < 0 {
			dst = append(dst, '-')
			m = -m
		}
		dst = strconv.AppendInt(dst, m/1000, 10)
		frac := m % 1000
		dst = append(dst, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
		// Drop trailing zeros but keep one fractional digit.
		for range 2 {
			if dst[len(dst)-1] != '0' {
				break
			}
			dst = dst[:len(dst)-1]
		}
		return dst, nil
	case sfString:
		return appendString(dst, v.str)
	case sfToken:
		t := v.str
		if t == "" || !(isAlpha(t[0]) || t[0] == '*') {
			return nil, errSFInput
		}
		for i := 1; i < len(t); i++ {
			if c := t[i]; !isTChar(c) && c != ':' && c != '/' {
				return nil, errSFInput
			}
		}
		return append(dst, t...), nil
	case sfBytes:
		dst = append(dst, ':')
		dst = base64.StdEncoding.AppendEncode(dst, v.bin)
		return append(dst, ':'), nil
	case sfBoolean:
		if v.num == 1 {
			return append(dst, "?1"...), nil
		}
		return append(dst, "?0"...), nil
	}
	return nil, errSFInput
}

func appendString(dst []byte, s string) ([]byte, error) {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			return nil, errSFInput
		}
		if c == '"' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"'), nil
}
