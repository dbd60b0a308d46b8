package sim

import (
	"bytes"
	"hash/maphash"
	"sync"
)

// A broadcast sends one body to many devices: APNs gets the very same
// bytes for every token, FCM the same bytes but for the token field. JSON
// decoding is most of a simulated request's cost, so each simulator keeps
// what it made of recent bodies, keyed by their bytes (FCM: all but the
// token's value). A cached body was fully validated when first seen, and
// a hit is checked byte for byte, so the cache never changes an answer.

// maxCached bounds a cache; when full it starts over, which is cheap and
// good enough for "one broadcast at a time, many devices".
const maxCached = 1024

// parseCache maps request bytes to what a simulator made of them.
type parseCache[V any] struct {
	seed maphash.Seed

	mu      sync.Mutex
	entries map[uint64]cacheEntry[V]
}

type cacheEntry[V any] struct {
	head, tail string // the bytes around the varying part (all bytes in head when none)
	tag        string // further inputs that shaped the value (headers)
	v          V
}

func newParseCache[V any]() *parseCache[V] {
	return &parseCache[V]{seed: maphash.MakeSeed(), entries: make(map[uint64]cacheEntry[V])}
}

func (c *parseCache[V]) key(head, tail []byte, tag string) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(tag)
	h.WriteByte(0)
	h.Write(head)
	h.WriteByte(0)
	h.Write(tail)
	return h.Sum64()
}

func (c *parseCache[V]) get(head, tail []byte, tag string) (V, bool) {
	k := c.key(head, tail, tag)
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if ok && e.tag == tag && e.head == string(head) && e.tail == string(tail) {
		return e.v, true
	}
	var zero V
	return zero, false
}

func (c *parseCache[V]) put(head, tail []byte, tag string, v V) {
	k := c.key(head, tail, tag)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCached {
		clear(c.entries)
	}
	c.entries[k] = cacheEntry[V]{head: string(head), tail: string(tail), tag: tag, v: v}
}

func (c *parseCache[V]) reset() {
	c.mu.Lock()
	clear(c.entries)
	c.mu.Unlock()
}

// tokenField is how the Admin SDK writes the target token of a message.
var tokenField = []byte(`"token":"`)

// splitToken finds the single "token":"..." field of an FCM body and
// returns the bytes before and after its value, and the value. ok is false
// when there is no such field, more than one, or a value with escapes;
// those bodies are not cached.
func splitToken(body []byte) (head, tail []byte, token string, ok bool) {
	i := bytes.Index(body, tokenField)
	if i < 0 || bytes.Index(body[i+len(tokenField):], tokenField) >= 0 {
		return nil, nil, "", false
	}
	start := i + len(tokenField)
	end := bytes.IndexByte(body[start:], '"')
	if end < 0 {
		return nil, nil, "", false
	}
	end += start
	if bytes.IndexByte(body[start:end], '\\') >= 0 {
		return nil, nil, "", false
	}
	return body[:start], body[end:], string(body[start:end]), true
}
