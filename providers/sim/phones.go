package sim

import (
	"encoding/hex"
	"encoding/json"
	"hash/maphash"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing/appsig"
)

// Device names one phone: its platform and its push token.
type Device struct {
	Platform providers.Platform `json:"platform"`
	Token    string             `json:"token"`
}

// nShards spreads phones over independently locked maps so that
// concurrent requests for different phones rarely contend.
const nShards = 64

// book holds the phones of one platform.
type book struct {
	platform providers.Platform
	seed     maphash.Seed
	shards   [nShards]shard
	count    atomic.Int64
}

type shard struct {
	mu sync.Mutex
	m  map[string]*phone
}

// phone is one virtual device. It is kept small because a benchmark may
// register a million: everything beyond the counters lives in st, which
// stays nil until the phone receives something.
type phone struct {
	offline    bool
	requests   uint32 // provider requests for this token, for Faults.FailFirst
	deliveries uint32
	refused    uint32 // deliveries the app refused to act on
	st         *phoneState
}

type phoneState struct {
	// screen holds the notifications shown, one per collapse identity. A
	// phone shows few, so a slice is cheaper than a map.
	screen []shown
	// pending holds, while offline, the latest undelivered message per
	// store key, oldest first.
	pending []message
	// seen lists the identities of every message delivered, to count raw
	// duplicates.
	seen []uint64
	// attempts records every request refused for this phone, and every
	// request after its first refusal, so that tests can check when a
	// refused device was tried again. Phones that were never refused
	// record nothing.
	attempts []Attempt
	// history is what the app remembers of the broadcasts it acted on;
	// it stays empty while no app is installed.
	history appsig.History
	// lastRefusal is the refusal code of the last delivery the app
	// refused.
	lastRefusal string
}

// Attempt is one provider request for a phone, as the simulator stamped
// it: when it arrived, when it was answered, with which status, and the
// Retry-After it carried (in seconds, 0 for none). Expires is the expiry
// the request asked for: its apns-expiration, or its arrival plus its
// android.ttl (FCM's four weeks when it gave none); zero when it asked
// not to be stored or, for APNs, gave no expiration.
type Attempt struct {
	Arrived    time.Time `json:"arrived"`
	Answered   time.Time `json:"answered"`
	Status     int       `json:"status"`
	RetryAfter int       `json:"retry_after,omitempty"`
	Expires    time.Time `json:"expires,omitzero"`
}

type shown struct {
	key string // collapse identity
	c   *content
	at  time.Time
}

// show puts c on the screen under key, replacing what was there.
func (st *phoneState) show(key string, c *content, at time.Time) {
	for i := range st.screen {
		if st.screen[i].key == key {
			st.screen[i] = shown{key, c, at}
			return
		}
	}
	st.screen = append(st.screen, shown{key, c, at})
}

// shownUnder returns the notification shown under key.
func (st *phoneState) shownUnder(key string) (shown, bool) {
	for _, n := range st.screen {
		if n.key == key {
			return n, true
		}
	}
	return shown{}, false
}

// message is one accepted provider request as the phone will receive it.
type message struct {
	c     *content
	msgID string // apns-id or the FCM message name
	// screen is the collapse identity on the screen: the explicit collapse
	// id, or msgID when there is none.
	screen string
	// store is the key under which an offline phone's provider keeps only
	// the latest message.
	store string
	// expires is when the provider drops the message for an offline
	// phone; zero means it never does. noStore means it is delivered only
	// to a phone that is online right now.
	expires time.Time
	noStore bool
}

// content is what a phone sees of a message. Contents are interned by
// identity, so that a million copies of one broadcast share one value.
type content struct {
	id       uint64
	title    string
	body     string
	data     map[string]string
	collapse string
	silent   bool
	// broadcast and recall come from the pushgate metadata block.
	broadcast string
	recall    string
}

// identity hashes what the phone would see. The same message delivered
// twice to one phone has the same identity: a raw duplicate. The collapse
// id counted is the explicit one, so that re-sends without a collapse id
// are duplicates too.
func identity(title, body, collapse string, silent bool, data map[string]string) uint64 {
	h := uint64(14695981039346656037)
	// FNV-1a over each string preceded by its length, so that no two
	// different field lists hash the same bytes.
	add := func(s string) {
		for n, i := uint64(len(s)), 0; i < 8; i, n = i+1, n>>8 {
			h ^= n & 0xff
			h *= 1099511628211
		}
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
	}
	add(title)
	add(body)
	add(collapse)
	if silent {
		add("1")
	} else {
		add("0")
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(k)
		add(data[k])
	}
	return h
}

// pushgateBlock is the metadata pushgate adds to every push: the broadcast
// id, or for a recall instruction the recalled broadcast's id.
type pushgateBlock struct {
	Broadcast string `json:"broadcast"`
	Recall    string `json:"recall"`
}

// intern returns the shared content for these fields.
func (s *Sim) intern(title, body, collapse string, silent bool, data map[string]string) *content {
	id := identity(title, body, collapse, silent, data)
	contents := s.contents.Load()
	if c, ok := contents.Load(id); ok {
		return c.(*content)
	}
	c := &content{id: id, title: title, body: body, data: data, collapse: collapse, silent: silent}
	if raw, ok := data["pushgate"]; ok {
		var pb pushgateBlock
		if json.Unmarshal([]byte(raw), &pb) == nil {
			c.broadcast, c.recall = pb.Broadcast, pb.Recall
		}
	}
	actual, _ := contents.LoadOrStore(id, c)
	return actual.(*content)
}

func newBook(p providers.Platform) *book {
	b := &book{platform: p, seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].m = make(map[string]*phone)
	}
	return b
}

func (b *book) shard(token string) *shard {
	return &b.shards[maphash.String(b.seed, token)%nShards]
}

// reserve pre-sizes empty shards for about n phones, so that registering a
// large population does not rehash repeatedly.
func (b *book) reserve(n int) {
	per := n/nShards + 1
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		if len(sh.m) == 0 {
			sh.m = make(map[string]*phone, per)
		}
		sh.mu.Unlock()
	}
}

// add registers token and reports whether it was new.
func (b *book) add(token string) bool {
	sh := b.shard(token)
	sh.mu.Lock()
	if _, ok := sh.m[token]; ok {
		sh.mu.Unlock()
		return false
	}
	sh.m[token] = &phone{}
	sh.mu.Unlock()
	b.count.Add(1)
	return true
}

// register adds a phone and records the order of registration, which
// devices.json keeps.
func (s *Sim) register(b *book, token string) bool {
	if !b.add(token) {
		return false
	}
	s.orderMu.Lock()
	s.order = append(s.order, Device{Platform: b.platform, Token: token})
	s.orderMu.Unlock()
	return true
}

// touch counts one provider request for token and returns how many the
// phone has had, this one included; ok is false for an unknown token.
func (b *book) touch(token string) (n uint32, ok bool) {
	sh := b.shard(token)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ph, ok := sh.m[token]
	if !ok {
		return 0, false
	}
	ph.requests++
	return ph.requests, true
}

// attempt records a request for token that arrived at arrived, asking
// for the expiry expires, and was just answered with status: always when
// it was refused, and for a phone that was refused before also when it
// succeeded. An unknown token records nothing.
func (s *Sim) attempt(b *book, token string, arrived, expires time.Time, status, retryAfter int) {
	sh := b.shard(token)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ph, ok := sh.m[token]
	if !ok || status == http.StatusOK && (ph.st == nil || len(ph.st.attempts) == 0) {
		return
	}
	if ph.st == nil {
		ph.st = &phoneState{}
	}
	ph.st.attempts = append(ph.st.attempts, Attempt{Arrived: arrived, Answered: s.now(), Status: status,
		RetryAfter: retryAfter, Expires: expires})
}

// accept hands a message the provider accepted to the phone: delivered at
// once if it is online, held (latest per store key) if it is not.
func (s *Sim) accept(b *book, token string, m message) {
	sh := b.shard(token)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ph, ok := sh.m[token]
	if !ok {
		return // cannot happen: decide found or created the phone, and phones are never removed
	}
	if !ph.offline {
		s.deliverLocked(b, token, ph, m)
		return
	}
	if m.noStore {
		s.stats.expired.Add(1)
		return
	}
	if ph.st == nil {
		ph.st = &phoneState{}
	}
	for i, p := range ph.st.pending {
		if p.store == m.store {
			ph.st.pending = slices.Delete(ph.st.pending, i, i+1)
			s.stats.pending.Add(-1)
			s.stats.replacedPending.Add(1)
			break
		}
	}
	ph.st.pending = append(ph.st.pending, m)
	s.stats.pending.Add(1)
}

// deliverLocked records the delivery of m and puts it on the phone: as
// the app decides when one is installed (see SetApp). The caller holds
// the phone's shard lock.
func (s *Sim) deliverLocked(b *book, token string, ph *phone, m message) {
	now := s.dlog.record(b.platform, token, m)
	s.stats.deliveries.Add(1)
	ph.deliveries++
	if ph.deliveries == 1 {
		s.stats.phonesReached.Add(1)
	}
	if ph.st == nil {
		ph.st = &phoneState{}
	}
	st := ph.st
	if slices.Contains(st.seen, m.c.id) {
		s.stats.rawDuplicates.Add(1)
	} else {
		st.seen = append(st.seen, m.c.id)
	}
	if app := s.app.Load(); app != nil {
		s.appActLocked(app, b, token, ph, m, now)
		return
	}
	switch {
	case m.c.recall != "":
		s.recallLocked(st, m.c.recall)
	case !m.c.silent:
		st.show(m.screen, m.c, now)
	}
}

// recallLocked is the app's handler for a recall: it removes every
// notification whose pushgate.broadcast is the recalled id. The caller
// holds the phone's shard lock.
func (s *Sim) recallLocked(st *phoneState, broadcast string) {
	st.screen = slices.DeleteFunc(st.screen, func(n shown) bool {
		if n.c.broadcast == broadcast {
			s.stats.recalled.Add(1)
			return true
		}
		return false
	})
}

// setOnline changes a phone's state; coming online delivers what its
// providers held for it, oldest first, dropping what expired meanwhile.
func (s *Sim) setOnline(b *book, token string, online bool) bool {
	sh := b.shard(token)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ph, ok := sh.m[token]
	if !ok {
		return false
	}
	wasOffline := ph.offline
	ph.offline = !online
	if !online || !wasOffline || ph.st == nil {
		return true
	}
	held := ph.st.pending
	ph.st.pending = nil
	now := s.now()
	for _, p := range held {
		s.stats.pending.Add(-1)
		if !p.expires.IsZero() && now.After(p.expires) {
			s.stats.expired.Add(1)
			continue
		}
		s.deliverLocked(b, token, ph, p)
	}
	return true
}

// Notification is one notification on a phone's screen.
type Notification struct {
	CollapseID string    `json:"collapse_id"`
	Title      string    `json:"title"`
	Body       string    `json:"body"`
	Broadcast  string    `json:"broadcast,omitempty"`
	ShownAt    time.Time `json:"shown_at"`
}

// DeviceView is a snapshot of one phone.
type DeviceView struct {
	Device
	Online bool `json:"online"`
	// Requests is how many provider requests named this phone.
	Requests int `json:"requests"`
	// Deliveries is how many messages reached it, silent ones included.
	Deliveries int `json:"deliveries"`
	// Pending is how many messages its providers hold while it is offline.
	Pending int `json:"pending"`
	// Refused is how many deliveries the app (see SetApp) refused to act
	// on, and LastRefusal the refusal code of the last one.
	Refused     int    `json:"refused"`
	LastRefusal string `json:"last_refusal,omitempty"`
	// Screen lists the notifications it shows, by collapse identity.
	Screen []Notification `json:"screen"`
	// Log is every delivery to it, oldest first.
	Log []Delivery `json:"log"`
	// Attempts lists its refused requests and every request after the
	// first refusal, oldest first; empty for a phone never refused.
	Attempts []Attempt `json:"attempts,omitempty"`
}

func (s *Sim) view(b *book, token string) (DeviceView, bool) {
	sh := b.shard(token)
	sh.mu.Lock()
	ph, ok := sh.m[token]
	if !ok {
		sh.mu.Unlock()
		return DeviceView{}, false
	}
	v := DeviceView{
		Device:     Device{Platform: b.platform, Token: token},
		Online:     !ph.offline,
		Requests:   int(ph.requests),
		Deliveries: int(ph.deliveries),
		Refused:    int(ph.refused),
		Screen:     []Notification{},
	}
	if ph.st != nil {
		v.Pending = len(ph.st.pending)
		v.LastRefusal = ph.st.lastRefusal
		v.Attempts = slices.Clone(ph.st.attempts)
		for _, n := range ph.st.screen {
			v.Screen = append(v.Screen, Notification{CollapseID: n.key, Title: n.c.title, Body: n.c.body, Broadcast: n.c.broadcast, ShownAt: n.at})
		}
	}
	sh.mu.Unlock()
	sort.Slice(v.Screen, func(i, j int) bool { return v.Screen[i].CollapseID < v.Screen[j].CollapseID })
	v.Log = s.dlog.list(func(e *logEntry) bool { return e.token == token && e.platform == b.platform })
	return v, true
}

// Shown counts the phones that show one content under a collapse identity.
type Shown struct {
	Title  string `json:"title"`
	Body   string `json:"body"`
	Phones int    `json:"phones"`
}

// showing scans every phone for the notification shown under collapseID.
func (s *Sim) showing(collapseID string) []Shown {
	type key struct{ title, body string }
	counts := make(map[key]int)
	for _, b := range s.books() {
		for i := range b.shards {
			sh := &b.shards[i]
			sh.mu.Lock()
			for _, ph := range sh.m {
				if ph.st == nil {
					continue
				}
				if n, ok := ph.st.shownUnder(collapseID); ok {
					counts[key{n.c.title, n.c.body}]++
				}
			}
			sh.mu.Unlock()
		}
	}
	out := make([]Shown, 0, len(counts))
	for k, n := range counts {
		out = append(out, Shown{Title: k.title, Body: k.body, Phones: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Phones != out[j].Phones {
			return out[i].Phones > out[j].Phones
		}
		return out[i].Title+out[i].Body < out[j].Title+out[j].Body
	})
	return out
}

// resetPhones forgets what every phone received and brings it online,
// keeping the registrations.
func (b *book) reset() {
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		for _, ph := range sh.m {
			*ph = phone{}
		}
		sh.mu.Unlock()
	}
}

// Delivery is one message reaching one phone.
type Delivery struct {
	// Time is when the phone received it: after the provider's latency for
	// an online phone, when it came online for an offline one.
	Time     time.Time          `json:"time"`
	Platform providers.Platform `json:"platform"`
	Token    string             `json:"token"`
	// CollapseID is the explicit collapse identity (apns-collapse-id, or
	// android.notification.tag), empty when the message had none.
	CollapseID string `json:"collapse_id,omitempty"`
	// MessageID is the provider's id: the apns-id, or the FCM message name.
	MessageID string            `json:"message_id"`
	Title     string            `json:"title,omitempty"`
	Body      string            `json:"body,omitempty"`
	Data      map[string]string `json:"data,omitempty"`
	Silent    bool              `json:"silent"`
	// Identity is the hash of what the phone saw (see identity); equal
	// identities on one phone are raw duplicates.
	Identity string `json:"identity"`
}

// deliveryLog records every delivery in time order. Entries point at
// interned contents, so a large broadcast costs a few words per phone.
type deliveryLog struct {
	now func() time.Time

	mu      sync.Mutex
	entries []logEntry
}

type logEntry struct {
	at       int64 // UnixNano
	platform providers.Platform
	token    string
	msgID    string
	c        *content
}

// record appends a delivery and returns its time. The time is read under
// the lock, so entries are in non-decreasing time order and "after T"
// is a binary search.
func (l *deliveryLog) record(p providers.Platform, token string, m message) time.Time {
	l.mu.Lock()
	now := l.now()
	l.entries = append(l.entries, logEntry{at: now.UnixNano(), platform: p, token: token, msgID: m.msgID, c: m.c})
	l.mu.Unlock()
	return now
}

func (l *deliveryLog) list(keep func(*logEntry) bool) []Delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []Delivery{}
	for i := range l.entries {
		e := &l.entries[i]
		if keep(e) {
			out = append(out, e.export())
		}
	}
	return out
}

// countAfter counts deliveries strictly after t, with the explicit collapse
// id collapseID when it is not empty.
func (l *deliveryLog) countAfter(t time.Time, collapseID string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	ns := t.UnixNano()
	i := sort.Search(len(l.entries), func(i int) bool { return l.entries[i].at > ns })
	if collapseID == "" {
		return len(l.entries) - i
	}
	n := 0
	for _, e := range l.entries[i:] {
		if e.c.collapse == collapseID {
			n++
		}
	}
	return n
}

func (l *deliveryLog) reset() {
	l.mu.Lock()
	l.entries = nil
	l.mu.Unlock()
}

func (e *logEntry) export() Delivery {
	return Delivery{
		Time:       time.Unix(0, e.at),
		Platform:   e.platform,
		Token:      e.token,
		CollapseID: e.c.collapse,
		MessageID:  e.msgID,
		Title:      e.c.title,
		Body:       e.c.body,
		Data:       maps.Clone(e.c.data),
		Silent:     e.c.silent,
		Identity:   hex.EncodeToString(be64(e.c.id)),
	}
}

func be64(x uint64) []byte {
	return []byte{byte(x >> 56), byte(x >> 48), byte(x >> 40), byte(x >> 32), byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}
}

// Token shapes. APNs device tokens are 32 bytes, written as 64 hex
// digits. FCM registration tokens are opaque; real ones are about 160
// characters: an instance id, a colon, and a long base64url body
// starting with APA91b.
const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func newAPNsToken(r *rand.Rand) string {
	var b [32]byte
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return hex.EncodeToString(b[:])
}

func newFCMToken(r *rand.Rand) string {
	var sb strings.Builder
	sb.Grow(163)
	for range 22 {
		sb.WriteByte(tokenAlphabet[r.IntN(len(tokenAlphabet))])
	}
	sb.WriteString(":APA91b")
	for range 134 {
		sb.WriteByte(tokenAlphabet[r.IntN(len(tokenAlphabet))])
	}
	return sb.String()
}

// wellFormedAPNsToken reports whether t looks like a device token: an
// even number of hex digits, 64 or more (Apple says tokens may grow).
func wellFormedAPNsToken(t string) bool {
	if len(t) < 64 || len(t) > 200 || len(t)%2 != 0 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// wellFormedFCMToken reports whether t could be a registration token:
// at least 32 characters of the base64url alphabet and colons.
func wellFormedFCMToken(t string) bool {
	if len(t) < 32 || len(t) > 4096 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_' || c == ':') {
			return false
		}
	}
	return true
}

// newRand returns a generator determined by seed.
func newRand(seed int64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x5851f42d4c957f2d))
}
