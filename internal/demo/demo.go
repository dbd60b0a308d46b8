// Package demo is pushgate demo: the whole story on one machine with
// nothing but Go installed. An in-process Redis (miniredis, unless a real
// one is named), the FCM and APNs simulators with their phones, freshly
// generated keys, and the gateway's API and worker pool, all in this
// process and on 127.0.0.1 only (package stack). Interactive by default;
// the script runs the story — delivery, refused attacks, kill, recall —
// and checks every outcome at the simulators.
//
// It owns no Redis keys; the forged task it plants to show a refusal uses
// the queue package's own key builder and task constructor.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
	"github.com/pushgate/pushgate/queue"
)

// The demo's fixed parts.
const (
	demoTopic        = "citizens"
	demoAndroidShare = 0.6
	demoSeed         = 7
	// demoLatency and demoJitter make the providers slow for the kill
	// step (40–80 ms a push), so that a broadcast is still under way when
	// the admin stops it.
	demoLatency = 40 * time.Millisecond
	demoJitter  = 40 * time.Millisecond
	// demoMinScriptDevices is the smallest audience the kill step can stop
	// part-way.
	demoMinScriptDevices = 100
)

// The correction of the story is the gateway's standard retraction, which
// one admin may send at once; custom text would wait for a second person.
var (
	demoFixTitle = queue.DefaultPolicy().RetractionTitle
	demoFixBody  = queue.DefaultPolicy().RetractionBody
)

// The texts of the story.
const (
	demoFirstTitle  = "Flood warning"
	demoFirstBody   = "Water is rising in Manggarai. Avoid the area until 18:00."
	demoForgedTitle = "Evacuate now"
	demoForgedBody  = "All bridges are closed. Leave the city immediately."
	demoBadTitle    = "Dam failure"
	demoBadBody     = "The Katulampa dam has failed. Evacuate at once."
)

// Options shape a demo run. The command checks them; Run trusts them.
type Options struct {
	Script   bool   // run the checked story unattended instead of the interactive demo
	RedisURL string // a Redis of its own; empty for the embedded, in-process one
	Devices  int    // simulated phones, about 60% Android
	Dir      string // a new or empty directory to write into and keep; empty for a temporary one
	Keep     bool   // keep the temporary directory on exit
	Verbose  bool   // log at info level rather than warnings and errors only
}

// MinScriptDevices is the smallest audience the script's kill step can
// stop part-way.
const MinScriptDevices = demoMinScriptDevices

// Run runs the demo until ctx ends (interactive) or the story is told
// (Script), then stops everything. With Script it fails unless every
// check held.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) error {
	level := slog.LevelWarn
	if o.Verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	d, err := startDemo(ctx, demoOptions{redisURL: o.RedisURL, devices: o.Devices, dir: o.Dir, keep: o.Keep, logger: logger})
	if err != nil {
		return err
	}
	d.printIntro(stdout)
	var runErr error
	if o.Script {
		runErr = d.script(ctx, stdout)
	} else {
		runErr = d.interactive(ctx, stdout, stderr)
	}
	return errors.Join(runErr, d.close(stdout))
}

// CheckEmptyDir refuses a directory that holds anything: the demo writes
// private keys and a keyring there and must not overwrite someone's files.
func CheckEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

// demoOptions shape a demo.
type demoOptions struct {
	redisURL string // empty: the embedded Redis
	devices  int
	dir      string // empty: a new temporary directory
	keep     bool
	logger   *slog.Logger
}

// demo is everything the demo runs. close stops it in order.
type demo struct {
	dir       string
	removeDir bool
	redis     *embeddedRedis // nil when --redis names a Redis
	redisURL  string
	st        *stack.Stack
	app       *stack.RunningApp
	sender    *client.Client
	admin     *client.Client
	imported  time.Duration
}

// startDemo starts Redis, the simulators and the gateway, and registers
// the phones through the API.
func startDemo(ctx context.Context, o demoOptions) (d *demo, err error) {
	d = &demo{dir: o.dir, redisURL: o.redisURL}
	defer func() {
		if err != nil {
			_ = d.close(io.Discard)
		}
	}()
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "pushgate-demo-"); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		d.removeDir = !o.keep
	}
	if d.redisURL == "" {
		if d.redis, err = startEmbeddedRedis(); err != nil {
			return nil, err
		}
		d.redisURL = d.redis.url()
	}
	var settings map[string]string
	if d.redis != nil {
		// The embedded Redis keeps nothing on purpose, and refuses CONFIG.
		settings = map[string]string{"redis.persistence_check": "off"}
	}
	d.st, err = stack.New(stack.Options{Dir: d.dir, RedisURL: d.redisURL, Devices: o.devices,
		AndroidShare: demoAndroidShare, Seed: demoSeed, Topic: demoTopic, Settings: settings, Logger: o.logger})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if d.app, err = stack.StartApp(ctx, d.st.ConfigPath, app.Roles{API: true, Worker: true}, o.logger); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if d.sender, err = d.st.Client(stack.KeySender, d.app.URL); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if d.admin, err = d.st.Client(stack.KeyAdmin, d.app.URL); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	start := time.Now()
	if err := d.st.ImportDevices(ctx, d.sender, demoTopic); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	d.imported = time.Since(start)
	return d, nil
}

// close stops the gateway (its API, then its workers), then the
// simulators, then the embedded Redis, and removes the temporary
// directory. It reports what it removed on w.
func (d *demo) close(w io.Writer) error {
	var errs []error
	for _, c := range []*client.Client{d.sender, d.admin} {
		if c != nil {
			c.Close()
		}
	}
	if d.app != nil {
		if err := d.app.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("demo: gateway: %w", err))
		}
	}
	if d.st != nil {
		if err := d.st.Close(); err != nil {
			errs = append(errs, fmt.Errorf("demo: simulators: %w", err))
		}
	}
	if d.redis != nil {
		d.redis.close()
		fmt.Fprintln(w, "The embedded Redis is gone, and with it every broadcast, device and nonce of this demo.")
	}
	if d.removeDir {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, fmt.Errorf("demo: %w", err))
		} else {
			fmt.Fprintf(w, "Removed %s (--keep keeps it).\n", d.dir)
		}
	}
	// Forget everything, so that a second close does nothing.
	*d = demo{}
	return errors.Join(errs...)
}

// printIntro says what runs where.
func (d *demo) printIntro(w io.Writer) {
	phones := d.st.CountByPlatform()
	fmt.Fprintln(w, "pushgate demo: the gateway, its workers, Redis and simulated FCM and APNs, in this process, on 127.0.0.1 only")
	if d.redis != nil {
		fmt.Fprintf(w, "  redis:   embedded (miniredis) on %s. It keeps everything in memory and nothing after exit;\n", d.redis.addr())
		fmt.Fprintln(w, "           production uses a real Redis (redis_url in pushgate.yaml).")
	} else {
		fmt.Fprintf(w, "  redis:   %s\n", app.RedactURL(d.redisURL))
	}
	fmt.Fprintf(w, "  phones:  %d simulated (%d Android via FCM, %d iPhone via APNs), registered in topic %s through the API in %s\n",
		len(d.st.Devices), phones[providers.FCM], phones[providers.APNs], demoTopic, d.imported.Round(time.Millisecond))
	fmt.Fprintf(w, "  gateway: %s\n", d.app.URL)
	kept := "kept"
	if d.removeDir {
		kept = "removed on exit; --keep keeps them"
	}
	fmt.Fprintf(w, "  files:   %s (keys/, keyring.yaml, pushgate.yaml; %s)\n", d.dir, kept)
	fmt.Fprintf(w, "  keys:    %s signs broadcasts to %s; %s is an admin; %s is an attacker's, not in the keyring\n",
		d.st.Keys[stack.KeySender].ID, demoTopic, d.st.Keys[stack.KeyAdmin].ID, d.st.Keys[stack.KeyAttacker].ID)
	fmt.Fprintln(w)
}

// interactive prints commands to try from another terminal and shows the
// deliveries live until ctx is cancelled (Ctrl-C).
func (d *demo) interactive(ctx context.Context, w, logw io.Writer) error {
	sender, admin := d.st.Keys[stack.KeySender], d.st.Keys[stack.KeyAdmin]
	fmt.Fprintln(w, "Try it from another terminal, in this repository:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "  # as the sender: a signed broadcast to every phone in the topic")
	fmt.Fprintf(w, "  export PUSHGATE_URL=%s PUSHGATE_KEY=%s PUSHGATE_KEY_ID=%s\n", d.app.URL, shellQuote(sender.File), sender.ID)
	fmt.Fprintf(w, "  go run ./cmd/pushgate send --topic %s --title %s --body %s --wait\n",
		demoTopic, shellQuote(demoFirstTitle), shellQuote(demoFirstBody))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "  # as the admin: stop a broadcast on every worker, then replace it on the phones it reached")
	fmt.Fprintf(w, "  export PUSHGATE_URL=%s PUSHGATE_KEY=%s PUSHGATE_KEY_ID=%s\n", d.app.URL, shellQuote(admin.File), admin.ID)
	fmt.Fprintln(w, "  go run ./cmd/pushgate kill --scope broadcast:ID --reason 'wrong text' --wait")
	fmt.Fprintf(w, "  go run ./cmd/pushgate recall ID --mode replace --title %s --body %s\n",
		shellQuote(demoFixTitle), shellQuote(demoFixBody))
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  (ID is the broadcast id that send prints. Phones: %s/sim/stats and /sim/devices/TOKEN.\n", d.st.Sim.ControlURL())
	fmt.Fprintln(w, "   The whole story, checked: go run ./cmd/pushgate demo --script)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Deliveries are shown live below; Ctrl-C stops everything.")

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.showLive(ctx, logw, isTerminal(logw))
	}()
	<-ctx.Done()
	wg.Wait()
	fmt.Fprintln(w, "Stopping: the gateway, then the simulators, then Redis.")
	return nil
}

// showLive writes one line of deliveries per platform twice a second
// until ctx is cancelled: rewritten in place on a terminal, else as a new
// line whenever it changes.
func (d *demo) showLive(ctx context.Context, w io.Writer, tty bool) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	last := ""
	for {
		line := demoLiveLine(d.st.Sim.Stats(), len(d.st.Devices))
		switch {
		case tty:
			fmt.Fprintf(w, "\r%s\x1b[K", line)
		case line != last:
			fmt.Fprintln(w, line)
		}
		last = line
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(w)
			}
			return
		case <-t.C:
		}
	}
}

// demoLiveLine describes what the simulators have delivered. Every phone
// is online, so a push the provider accepted (200) is a delivery.
func demoLiveLine(s sim.Stats, phones int) string {
	accepted := func(p providers.Platform) int64 { return s.Requests[p][http.StatusOK] }
	return fmt.Sprintf("live: FCM %d delivered, APNs %d delivered, %d in flight; %d of %d phones reached; %d notifications recalled",
		accepted(providers.FCM), accepted(providers.APNs), s.InFlight[providers.FCM]+s.InFlight[providers.APNs],
		s.PhonesReached, phones, s.Recalled)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
