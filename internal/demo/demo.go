// Package demo is pushgate demo: the whole story on one machine with
// nothing but Go installed. An in-process Redis (miniredis, unless a real
// one is named), the FCM and APNs simulators with their phones, freshly
// generated keys, and the gateway's API and worker pool, all in this
// process and on 127.0.0.1 only (package stack). Interactive by default:
// it starts a broadcast slow enough to kill by hand (the slow key's rate
// makes it last about 90 seconds), prints the commands that kill and
// recall it, and shows the newest broadcasts live as the API reports them
// (the same status pushgate status reads). The script runs the story —
// delivery, refused attacks, kill, recall — and checks every outcome at
// the simulators.
//
// The terminal gets the story and the live lines, drawn in place only on
// a terminal; the log of everything the demo runs (the gateway's,
// asynq's, go-redis's, net/http's) goes to pushgate.log in the demo's
// directory, and nowhere else.
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
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/internal/app"
	"github.com/pushgate/pushgate/internal/stack"
	"github.com/pushgate/pushgate/providers"
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
	// demoSlowFor is about how long the interactive demo's slow broadcast
	// takes to reach every phone: long enough to read the instructions
	// and kill it by hand.
	demoSlowFor = 90 * time.Second
	// demoLiveEvery is how often the live lines read the statuses.
	demoLiveEvery = 500 * time.Millisecond
	// DefaultPlainEvery is how often a broadcast's live line is written
	// anew when the writer is not a terminal, unless the broadcast
	// changes state sooner.
	DefaultPlainEvery = 5 * time.Second
	// LogName is the demo's log file, in its directory.
	LogName = "pushgate.log"
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
	// Terminal says the live lines' writer (stderr) is a terminal: they
	// are then redrawn in place. Otherwise a broadcast's line is written
	// as a plain line every PlainEvery (DefaultPlainEvery when zero), and
	// at once when the broadcast changes state.
	Terminal   bool
	PlainEvery time.Duration
}

// MinScriptDevices is the smallest audience the script's kill step can
// stop part-way.
const MinScriptDevices = demoMinScriptDevices

// Run runs the demo until ctx ends (interactive) or the story is told
// (Script), then stops everything. With Script it fails unless every
// check held. Its log goes to LogName in the demo's directory, whose path
// it prints first; a temporary directory is kept when the demo failed, for
// that log.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) error {
	level := slog.LevelWarn
	if o.Verbose {
		level = slog.LevelInfo
	}
	d, err := startDemo(ctx, demoOptions{redisURL: o.RedisURL, devices: o.Devices, dir: o.Dir, keep: o.Keep, level: level}, stdout)
	if err != nil {
		return err
	}
	d.printIntro(stdout)
	var runErr error
	if o.Script {
		runErr = d.script(ctx, stdout)
	} else {
		every := o.PlainEvery
		if every <= 0 {
			every = DefaultPlainEvery
		}
		runErr = d.interactive(ctx, stdout, newLiveWriter(stderr, o.Terminal, every))
	}
	if runErr != nil && ctx.Err() == nil {
		d.removeDir = false
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
	level    slog.Level // of the log file
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
	// slowRate is the pushes a second the slow key (stack.KeySlow) may
	// send.
	slowRate int

	logPath string
	logFile *os.File
	// restoreRedisLogs gives go-redis its default logger back, once the
	// log file closes.
	restoreRedisLogs func()
}

// startDemo opens the log file, starts Redis, the simulators and the
// gateway, and registers the phones through the API. It names the log
// file on w before anything can log.
func startDemo(ctx context.Context, o demoOptions, w io.Writer) (d *demo, err error) {
	d = &demo{dir: o.dir, redisURL: o.redisURL, slowRate: demoSlowRate(o.devices)}
	defer func() {
		if err != nil {
			// Keep a temporary directory for its log, unless the log is
			// empty and tells nothing.
			if d.logPath != "" && d.removeDir {
				if fi, statErr := os.Stat(d.logPath); statErr == nil && fi.Size() > 0 {
					d.removeDir = false
				}
			}
			_ = d.close(w)
		}
	}()
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "pushgate-demo-"); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		d.removeDir = !o.keep
	} else if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	d.logPath = filepath.Join(d.dir, LogName)
	if d.logFile, err = os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(w, "pushgate demo: the log of everything it runs goes to %s (tail -f it)\n", d.logPath)
	logger := slog.New(slog.NewTextHandler(d.logFile, &slog.HandlerOptions{Level: o.level}))
	// go-redis logs through one logger per process; the demo is this
	// process's command, so it takes it until close.
	d.restoreRedisLogs = app.RouteRedisLogs(logger)
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
		AndroidShare: demoAndroidShare, Seed: demoSeed, Topic: demoTopic, Settings: settings, Logger: logger,
		SlowRate: fmt.Sprintf("%d/s", d.slowRate)})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if d.app, err = stack.StartApp(ctx, d.st.ConfigPath, app.Roles{API: true, Worker: true}, logger); err != nil {
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

// demoSlowRate is the slow key's pushes a second that make a broadcast to
// every one of devices phones take about demoSlowFor.
func demoSlowRate(devices int) int {
	return max(1, int(math.Ceil(float64(devices)/demoSlowFor.Seconds())))
}

// close stops the gateway (its API, then its workers), then the
// simulators, then the embedded Redis, then closes the log and removes
// the temporary directory. It reports what it removed or kept on w.
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
	if d.restoreRedisLogs != nil {
		d.restoreRedisLogs()
	}
	if d.logFile != nil {
		if err := d.logFile.Close(); err != nil {
			errs = append(errs, fmt.Errorf("demo: log: %w", err))
		}
	}
	switch {
	case d.removeDir:
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, fmt.Errorf("demo: %w", err))
		} else {
			fmt.Fprintf(w, "Removed %s and its log (--keep keeps them).\n", d.dir)
		}
	case d.logPath != "":
		fmt.Fprintf(w, "The log is in %s.\n", d.logPath)
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
	fmt.Fprintf(w, "  files:   %s (keys/, keyring.yaml, pushgate.yaml, %s; %s)\n", d.dir, LogName, kept)
	fmt.Fprintf(w, "  keys:    %s signs broadcasts to %s; %s is an admin; %s is an attacker's, not in the keyring\n",
		d.st.Keys[stack.KeySender].ID, demoTopic, d.st.Keys[stack.KeyAdmin].ID, d.st.Keys[stack.KeyAttacker].ID)
	fmt.Fprintln(w)
}

// interactive prints commands to try from another terminal, starts a
// broadcast slow enough to kill by hand, and shows the status of the
// newest broadcasts on live until ctx is cancelled (Ctrl-C).
func (d *demo) interactive(ctx context.Context, w io.Writer, live *liveWriter) error {
	sender, admin, slow := d.st.Keys[stack.KeySender], d.st.Keys[stack.KeyAdmin], d.st.Keys[stack.KeySlow]
	slowClient, err := d.st.Client(stack.KeySlow, d.app.URL)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer slowClient.Close()
	bad, err := slowClient.Submit(ctx, demoBroadcast(demoBadTitle, demoBadBody))
	if err != nil {
		return fmt.Errorf("demo: the slow broadcast: %w", err)
	}
	n := len(d.st.Devices)
	about := (time.Duration(float64(n)/float64(d.slowRate)) * time.Second).Round(time.Second)

	fmt.Fprintf(w, "A broadcast with the wrong text is going out now, slowly: %s (key %s) may send %d pushes a second,\n",
		shellQuote(demoBadTitle), slow.ID, d.slowRate)
	fmt.Fprintf(w, "so its %d phones take about %s. It is broadcast %s.\n", n, about, bad.ID)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Stop it from another terminal, in this repository, as the admin; then replace it on the phones it reached:")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  export PUSHGATE_URL=%s PUSHGATE_KEY=%s PUSHGATE_KEY_ID=%s\n", d.app.URL, shellQuote(admin.File), admin.ID)
	fmt.Fprintf(w, "  go run ./cmd/pushgate kill --scope broadcast:%s --reason 'wrong text' --wait\n", bad.ID)
	fmt.Fprintf(w, "  go run ./cmd/pushgate recall %s --mode replace --title %s --body %s\n",
		bad.ID, shellQuote(demoFixTitle), shellQuote(demoFixBody))
	fmt.Fprintf(w, "  go run ./cmd/pushgate status %s\n", bad.ID)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Send one of your own, as the sender: a signed broadcast to every phone in the topic:")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  export PUSHGATE_URL=%s PUSHGATE_KEY=%s PUSHGATE_KEY_ID=%s\n", d.app.URL, shellQuote(sender.File), sender.ID)
	fmt.Fprintf(w, "  go run ./cmd/pushgate send --topic %s --title %s --body %s --wait\n",
		demoTopic, shellQuote(demoFirstTitle), shellQuote(demoFirstBody))
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  (Phones: %s/sim/stats and /sim/devices/TOKEN.\n", d.st.Sim.ControlURL())
	fmt.Fprintln(w, "   The whole story, checked: go run ./cmd/pushgate demo --script)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "The newest broadcasts are shown live below, as pushgate status reads them; Ctrl-C stops everything.")

	var wg sync.WaitGroup
	wg.Go(func() { d.showLive(ctx, live) })
	<-ctx.Done()
	wg.Wait()
	fmt.Fprintln(w, "Stopping: the gateway, then the simulators, then Redis.")
	return nil
}

// showLive shows the live lines every demoLiveEvery until ctx is
// cancelled.
func (d *demo) showLive(ctx context.Context, live *liveWriter) {
	t := time.NewTicker(demoLiveEvery)
	defer t.Stop()
	for {
		sts, err := d.liveStatuses(ctx)
		if ctx.Err() != nil {
			return
		}
		live.show(time.Now(), demoLiveLines(sts, err))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// demoLiveShown is how many broadcasts the live lines show: the newest.
const demoLiveShown = 3

// liveStatuses reads the status of the newest broadcasts, oldest first,
// each through the API as pushgate status reads it: the live lines show
// no figure of their own.
func (d *demo) liveStatuses(ctx context.Context) ([]*api.Status, error) {
	page, err := d.admin.List(ctx, client.ListOptions{Limit: demoLiveShown})
	if err != nil {
		return nil, err
	}
	out := make([]*api.Status, 0, len(page.Broadcasts))
	for _, listed := range slices.Backward(page.Broadcasts) {
		st, err := d.admin.Status(ctx, listed.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// liveLine is one line of the live display, and what it shows: a new
// plain line is written at once when what it shows changes.
type liveLine struct {
	id   string // the broadcast's; "" for a line about none
	what string // its state
	text string
}

// demoLiveLines are the live lines of sts, or of the error reading them.
func demoLiveLines(sts []*api.Status, err error) []liveLine {
	switch {
	case err != nil:
		return []liveLine{{what: "error", text: "live: status unavailable: " + err.Error()}}
	case len(sts) == 0:
		return []liveLine{{what: "none", text: "live: no broadcast yet"}}
	}
	out := make([]liveLine, len(sts))
	for i, st := range sts {
		out[i] = liveLine{id: st.ID, what: st.State, text: demoLiveLine(st)}
	}
	return out
}

// demoLiveLine describes a broadcast's status in one line: its state, how
// many phones got it (the devices its providers accepted), and what else
// its counters hold.
func demoLiveLine(st *api.Status) string {
	n := st.Counters
	var b strings.Builder
	fmt.Fprintf(&b, "live: %s %q %s", st.ID, st.Title, st.State)
	if st.RecallMode != "" {
		fmt.Fprintf(&b, " (%s)", st.RecallMode)
	}
	if total := max(n.Targeted, n.Planned); total > 0 {
		fmt.Fprintf(&b, ": %d of %d phones got it", n.Sent, total)
	} else {
		b.WriteString(": finding its phones")
	}
	for _, c := range []struct {
		v    int64
		what string
	}{
		{n.Failed, "failed"}, {n.Expired, "expired"}, {n.InvalidToken, "invalid tokens"}, {n.Cancelled, "cancelled"},
		{n.Uncertain, "uncertain"}, {n.Held, "held"}, {n.Throttled, "throttled"}, {n.Capped, "capped"},
		{n.Recalled, "recalled"}, {n.RecallFailed, "recall failed"},
	} {
		if c.v > 0 {
			fmt.Fprintf(&b, ", %d %s", c.v, c.what)
		}
	}
	if st.State == api.StateSending && st.LimitedBy != "" && st.UpdatedAt.Sub(st.LimitedAt) <= 5*time.Second {
		fmt.Fprintf(&b, "; held back by %s", st.LimitedBy)
	}
	return b.String()
}

// liveWriter writes the live lines. On a terminal it redraws them in
// place. Elsewhere it writes a line as a plain line (no carriage return,
// no escape sequence) when it changed and every has passed since that
// broadcast's last one, or at once when what it shows changed.
type liveWriter struct {
	w        io.Writer
	terminal bool
	every    time.Duration

	drawn int                    // lines drawn on the terminal
	last  map[string]writtenLine // by broadcast id, off a terminal
}

// writtenLine is the last plain line written of a broadcast.
type writtenLine struct {
	what, text string
	at         time.Time
}

func newLiveWriter(w io.Writer, terminal bool, every time.Duration) *liveWriter {
	return &liveWriter{w: w, terminal: terminal, every: every, last: map[string]writtenLine{}}
}

// show writes lines at now.
func (l *liveWriter) show(now time.Time, lines []liveLine) {
	if l.terminal {
		l.draw(lines)
		return
	}
	for _, ln := range lines {
		last, ok := l.last[ln.id]
		if ok && (ln.text == last.text || (ln.what == last.what && now.Sub(last.at) < l.every)) {
			continue
		}
		fmt.Fprintln(l.w, ln.text)
		l.last[ln.id] = writtenLine{what: ln.what, text: ln.text, at: now}
	}
}

// draw redraws the lines on the terminal: back up over the lines drawn
// before, then each line, cleared to its end.
func (l *liveWriter) draw(lines []liveLine) {
	var b strings.Builder
	if l.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dF", l.drawn) // to the start of the first line drawn
	}
	width := terminalWidth(l.w)
	for _, ln := range lines {
		text := ln.text
		// A line as wide as the terminal wraps, and the next redraw would
		// back up over too few lines.
		if r := []rune(text); width > 1 && len(r) >= width {
			text = string(r[:width-2]) + "…"
		}
		b.WriteString(text + "\x1b[K\n")
	}
	// Fewer lines than before: clear what is left below.
	if len(lines) < l.drawn {
		b.WriteString("\x1b[J")
	}
	l.drawn = len(lines)
	io.WriteString(l.w, b.String())
}

// terminalWidth is the width of the terminal w is, 0 when unknown.
func terminalWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return 0
	}
	return width
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
