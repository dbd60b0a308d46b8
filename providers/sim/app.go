package sim

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/signing/appsig"
)

// App is pushgate's app as every phone runs it once SetApp installs it:
// the app-signing public keys it trusts and the topics it subscribed each
// phone to. A phone with the app shows only what verifies (see SetApp).
type App struct {
	// Keys are the trusted app-signing public keys by key id.
	Keys map[string]ed25519.PublicKey
	// Topics returns the topics the app subscribed a phone to; nil, or a
	// nil result, means none. It is called for every delivery while the
	// phone is locked, from many goroutines at once: it must be safe for
	// concurrent use and must not call the Sim.
	Topics func(platform providers.Platform, token string) []string
}

// installedApp is the app as the phones use it: its own copy of the keys
// and the verifier built on them.
type installedApp struct {
	verifier appsig.Verifier
	topics   func(providers.Platform, string) []string
}

// SetApp installs app on every phone, replacing the app installed before;
// nil uninstalls it, and every phone then shows every visible message
// again. The keys are copied.
//
// With an app, each delivered message is checked as the app would check
// it before it acts: appsig's Verifier, on the simulator's clock, against
// the push as the provider delivered it and the phone's token and topics,
// then the phone's appsig.History. A verified alert shows its verified
// title and body under its signed collapse id (the provider's collapse
// identity when it names none); a recall-replace does the same, replacing
// what is shown there; a recall-remove removes every notification of its
// broadcast. An alert or replacement without text shows nothing. A
// refused message changes nothing on the screen and is counted by
// refusal code (Stats.Refusals, DeviceView.Refused). Deliveries are
// recorded and counted as before: the provider delivered them.
//
// Phones keep what their app remembered (the broadcasts it acted on) when
// the app is replaced; Reset forgets it.
func (s *Sim) SetApp(app *App) error {
	if app == nil {
		s.app.Store(nil)
		return nil
	}
	keys := make(map[string]ed25519.PublicKey, len(app.Keys))
	for id, k := range app.Keys {
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("sim: app key %q is %d bytes, want %d", id, len(k), ed25519.PublicKeySize)
		}
		keys[id] = bytes.Clone(k)
	}
	s.app.Store(&installedApp{
		verifier: appsig.Verifier{Keys: keys, Now: s.now},
		topics:   app.Topics,
	})
	return nil
}

// App returns a copy of the installed app, or nil when there is none.
func (s *Sim) App() *App {
	a := s.app.Load()
	if a == nil {
		return nil
	}
	keys := make(map[string]ed25519.PublicKey, len(a.verifier.Keys))
	for id, k := range a.verifier.Keys {
		keys[id] = bytes.Clone(k)
	}
	return &App{Keys: keys, Topics: a.topics}
}

// Refusals counts the messages the app refused to act on, by refusal code
// (appsig.CodeMalformed, appsig.CodeAlreadyShown, ...).
func (s *Sim) Refusals() map[string]int64 { return s.refusals.snapshot() }

// refusalCounts counts refusals by code. Refusals are rare next to
// deliveries, so a locked map is enough.
type refusalCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

func (r *refusalCounts) add(code string) {
	r.mu.Lock()
	if r.m == nil {
		r.m = make(map[string]int64)
	}
	r.m[code]++
	r.mu.Unlock()
}

func (r *refusalCounts) snapshot() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := maps.Clone(r.m)
	if out == nil {
		out = map[string]int64{}
	}
	return out
}

func (r *refusalCounts) reset() {
	r.mu.Lock()
	r.m = nil
	r.mu.Unlock()
}

// appActLocked lets the app act on m, delivered at now: verify, admit,
// then show, replace or remove. The caller holds the phone's shard lock
// and has created ph.st.
func (s *Sim) appActLocked(app *installedApp, b *book, token string, ph *phone, m message, now time.Time) {
	st := ph.st
	dev := appsig.Device{Token: token}
	if b.platform == providers.APNs {
		// The app sees its device token as bytes and writes them in
		// lowercase hex, whatever case the provider request used.
		dev.Token = strings.ToLower(token)
	}
	if app.topics != nil {
		dev.Topics = app.topics(b.platform, token)
	}
	push := appsig.Push{Title: m.c.title, Body: m.c.body, Data: m.c.data}
	claims, err := app.verifier.Verify(dev, push)
	if err == nil {
		err = st.history.Admit(claims)
	}
	if err != nil {
		code := appsig.CodeOf(err)
		if code == "" {
			code = "other"
		}
		s.refusals.add(code)
		ph.refused++
		st.lastRefusal = code
		return
	}
	switch {
	case claims.Kind == appsig.KindRecallRemove:
		s.recallLocked(st, claims.Broadcast)
	case claims.Title != "" || claims.Body != "":
		key := claims.Collapse
		if key == "" {
			key = m.screen
		}
		st.show(key, s.verifiedContent(m.c, claims), now)
	}
}

// verifiedContent is what the screen shows of c once the app verified it
// as claims: c itself when its own text is the verified text, else (a
// data-only message whose block carried the text) the interned content
// with the verified title and body.
func (s *Sim) verifiedContent(c *content, claims *appsig.Claims) *content {
	if c.title == claims.Title && c.body == claims.Body {
		return c
	}
	return s.intern(claims.Title, claims.Body, c.collapse, false, c.data)
}
