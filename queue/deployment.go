package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/api"
)

// The deployment marker (docs/ARCHITECTURE.md, "Redis data loss") is how a
// process learns that the Redis it talks to lost what it held: a restart
// without persistence, a FLUSHALL, a failover to an empty replica, or
// another deployment's data. The first process on an empty Redis sets
// Keys.Deployment to a random id with SET NX; every process remembers the
// id it saw, in memory and in its state directory, and reads the marker
// again at start and every check interval. A missing marker, or another
// id, is the "Redis data lost" condition: the API refuses new work,
// readiness fails, and workers put off every task. A process that
// remembers an id never writes the marker, so it never papers over a
// loss; only an operator's `pushgate redis` ends the condition.

// DefaultLossCheckInterval is how often a process reads the deployment
// marker unless redis.loss_check_interval says otherwise.
const DefaultLossCheckInterval = 5 * time.Second

const (
	// deploymentStateFile is the file, in the state directory, that
	// remembers the deployment id.
	deploymentStateFile = "deployment"
	// maxMarkerBytes bounds a marker read from Redis.
	maxMarkerBytes = 4096
	// maxReplaces bounds how many earlier deployments a marker names.
	maxReplaces = 32
)

// ErrRedisDataLost is in the chain of every *DataLostError.
var ErrRedisDataLost = errors.New("redis lost data")

// ErrMarkerUnreadable marks a deployment marker that is not one.
var ErrMarkerUnreadable = errors.New("unreadable deployment marker")

// DataLostError is the "Redis data lost" condition: the deployment marker
// in Redis is missing, unreadable or another deployment's.
type DataLostError struct {
	// Key is the marker's key.
	Key string
	// Expected is the deployment id this process remembers; "" for a
	// process that has none yet and found an unreadable marker.
	Expected string
	// Found is the id of the marker in Redis; "" when it is missing or
	// unreadable.
	Found string
	// Unreadable, when not empty, says why the marker could not be read.
	Unreadable string
}

// Reason says what was found, without ids: what readiness and API
// clients are told.
func (e *DataLostError) Reason() string {
	switch {
	case e.Unreadable != "":
		return "the deployment marker in Redis is unreadable"
	case e.Found == "":
		return "the deployment marker in Redis is missing"
	default:
		return "the deployment marker in Redis is another deployment's"
	}
}

func (e *DataLostError) Error() string {
	expected := "deployment " + e.Expected
	if e.Expected == "" {
		expected = "no deployment yet"
	}
	switch {
	case e.Unreadable != "":
		return fmt.Sprintf("Redis lost data: the deployment marker %s is unreadable (%s); this process remembers %s", e.Key, e.Unreadable, expected)
	case e.Found == "":
		return fmt.Sprintf("Redis lost data: the deployment marker %s is missing; this process remembers %s", e.Key, expected)
	default:
		return fmt.Sprintf("Redis lost data: the deployment marker %s holds deployment %s; this process remembers %s", e.Key, e.Found, expected)
	}
}

// Is makes errors.Is(err, ErrRedisDataLost) true.
func (e *DataLostError) Is(target error) bool { return target == ErrRedisDataLost }

// Marker is the value of the deployment marker.
type Marker struct {
	// ID is the deployment's id: 32 lowercase hex digits.
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	// Replaces lists the deployments an operator replaced with this one
	// (pushgate redis restore-marker, accept-loss): a process that
	// remembers one of them adopts ID. A marker a process created has
	// none.
	Replaces []string `json:"replaces,omitempty"`
}

// ParseMarker reads a marker's value as Redis holds it. The value is
// untrusted: anything but a well-formed marker is an error.
func ParseMarker(raw string) (*Marker, error) {
	if len(raw) > maxMarkerBytes {
		return nil, fmt.Errorf("%d bytes, more than %d", len(raw), maxMarkerBytes)
	}
	var m Marker
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, fmt.Errorf("not a marker: %v", err)
	}
	if !validDeploymentID(m.ID) {
		return nil, errors.New("its id is not 32 lowercase hex digits")
	}
	if len(m.Replaces) > maxReplaces {
		return nil, fmt.Errorf("it replaces %d deployments, more than %d", len(m.Replaces), maxReplaces)
	}
	for _, id := range m.Replaces {
		if !validDeploymentID(id) {
			return nil, errors.New("an id it replaces is not 32 lowercase hex digits")
		}
	}
	return &m, nil
}

func (m *Marker) encode() string {
	b, _ := json.Marshal(m)
	return string(b)
}

func validDeploymentID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func newDeploymentID() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// DeploymentConfig configures a process's Deployment.
type DeploymentConfig struct {
	Redis redis.UniversalClient
	Keys  Keys
	// StateDir is where the deployment id is remembered across restarts
	// (control.state_dir); "" remembers it in memory only, so a restarted
	// process cannot tell an emptied Redis from a new one.
	StateDir string
	// CheckInterval is how often the marker is read; zero means
	// DefaultLossCheckInterval.
	CheckInterval time.Duration
	Logger        *slog.Logger
	// Registerer, when set, gets the pushgate_redis_data_lost gauge.
	Registerer prometheus.Registerer
	// Now is the clock of the markers' creation times; nil means time.Now.
	Now func() time.Time
}

// Deployment follows the deployment marker and holds the "Redis data
// lost" condition that Err reports.
type Deployment struct {
	cfg    DeploymentConfig
	logger *slog.Logger
	gauge  prometheus.Gauge

	mu       sync.Mutex // guards what follows
	id       string     // the remembered deployment id; "" until known
	lost     *DataLostError
	readFail bool // the last check could not read Redis

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// NewDeployment reads the deployment id remembered in StateDir; Start
// checks the marker. A state file that holds no deployment id is an error.
func NewDeployment(cfg DeploymentConfig) (*Deployment, error) {
	if cfg.Redis == nil {
		return nil, errors.New("queue: the deployment marker needs Redis")
	}
	if cfg.Keys == (Keys{}) {
		cfg.Keys = NewKeys("")
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultLossCheckInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Deployment{cfg: cfg, logger: cfg.Logger.With("component", "deployment")}
	id, err := RememberedDeployment(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	d.id = id
	if cfg.StateDir == "" {
		d.logger.Warn("control.state_dir is not set: a restart forgets the deployment id, so a Redis that lost its data while this process was down would go unnoticed")
	}
	if cfg.Registerer != nil {
		d.gauge = prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushgate_redis_data_lost",
			Help: "1 while this process finds that Redis lost data (its deployment marker missing, unreadable or another deployment's): the API refuses new work and workers start no task.",
		})
		if err := cfg.Registerer.Register(d.gauge); err != nil {
			return nil, fmt.Errorf("queue: register deployment metrics: %w", err)
		}
	}
	return d, nil
}

// Start checks the marker once, creating it on an empty Redis when this
// process remembers no deployment, and then every CheckInterval until
// Close. Finding that Redis lost data does not fail Start: the process
// runs in the condition and says so. An error is returned only when Redis
// could not be read or written.
func (d *Deployment) Start(ctx context.Context) error {
	if err := d.check(ctx); err != nil {
		return fmt.Errorf("deployment marker: %w", err)
	}
	ctx, d.stop = context.WithCancel(context.Background())
	d.wg.Go(func() { d.follow(ctx) })
	return nil
}

// Close stops following the marker.
func (d *Deployment) Close() {
	if d.stop != nil {
		d.stop()
	}
	d.wg.Wait()
}

func (d *Deployment) follow(ctx context.Context) {
	t := time.NewTicker(d.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := d.check(ctx)
		if ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		logIt := err != nil && !d.readFail
		d.readFail = err != nil
		d.mu.Unlock()
		if logIt {
			d.logger.Warn("deployment marker: check failed; the condition stays as it was until Redis answers", "err", err)
		}
	}
}

// Err returns a *DataLostError while Redis lost data, else nil. A nil
// Deployment never reports a loss.
func (d *Deployment) Err() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lost == nil {
		return nil
	}
	e := *d.lost
	return &e
}

// ID is the deployment id this process remembers; "" before Start.
func (d *Deployment) ID() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.id
}

// check reads the marker once and updates the condition.
func (d *Deployment) check(ctx context.Context) error {
	key := d.cfg.Keys.Deployment()
	for range 3 {
		raw, err := d.cfg.Redis.Get(ctx, key).Result()
		missing := errors.Is(err, redis.Nil)
		if err != nil && !missing {
			return fmt.Errorf("read %s: %w", key, err)
		}
		remembered := d.ID()
		if missing && remembered != "" {
			// Never recreated here: that would hide the loss from every
			// process, this one included.
			d.setLost(&DataLostError{Key: key, Expected: remembered})
			return nil
		}
		if missing {
			m := &Marker{ID: newDeploymentID(), Created: d.cfg.Now().UTC().Truncate(time.Second)}
			created, err := d.cfg.Redis.SetNX(ctx, key, m.encode(), 0).Result()
			if err != nil {
				return fmt.Errorf("create %s: %w", key, err)
			}
			if !created {
				continue // another process created it first: read it
			}
			d.logger.Info("new deployment: Redis held no deployment marker, and this process remembered none", "deployment", m.ID, "key", key)
			d.adopt(m.ID)
			return nil
		}
		m, err := ParseMarker(raw)
		switch {
		case err != nil:
			d.setLost(&DataLostError{Key: key, Expected: remembered, Unreadable: err.Error()})
		case m.ID == remembered:
			d.setOK()
		case remembered == "":
			d.adopt(m.ID)
		case slices.Contains(m.Replaces, remembered):
			d.logger.Warn("an operator replaced this process's deployment (pushgate redis): adopting the new id",
				"deployment", m.ID, "replaced", remembered)
			d.adopt(m.ID)
		default:
			d.setLost(&DataLostError{Key: key, Expected: remembered, Found: m.ID})
		}
		return nil
	}
	return fmt.Errorf("%s changed while it was being created", key)
}

// adopt remembers id, in memory and in the state file, and clears the
// condition.
func (d *Deployment) adopt(id string) {
	if path := d.stateFile(); path != "" {
		if err := writeDeploymentFile(path, id); err != nil {
			d.logger.Warn("deployment id not saved: a restart of this process would not notice a Redis that lost its data",
				"path", path, "err", err)
		}
	}
	d.mu.Lock()
	d.id = id
	d.mu.Unlock()
	d.setOK()
}

func (d *Deployment) setOK() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lost != nil {
		d.logger.Warn("the deployment marker in Redis matches again: resuming", "deployment", d.id)
	}
	d.lost = nil
	if d.gauge != nil {
		d.gauge.Set(0)
	}
}

func (d *Deployment) setLost(e *DataLostError) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lost == nil || *d.lost != *e {
		d.logger.Error("Redis lost data: refusing new work and starting no task until an operator restores Redis or accepts the loss (pushgate redis; README, Redis persistence)",
			"event", "redis_data_lost", "key", e.Key, "expected", e.Expected, "found", e.Found, "reason", e.Reason(), "unreadable", e.Unreadable)
	}
	d.lost = e
	if d.gauge != nil {
		d.gauge.Set(1)
	}
}

func (d *Deployment) stateFile() string {
	if d.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(d.cfg.StateDir, deploymentStateFile)
}

// RememberedDeployment returns the deployment id remembered in stateDir;
// "" when stateDir is "" or remembers none. The file is untrusted: one
// that holds anything but an id is an error.
func RememberedDeployment(stateDir string) (string, error) {
	if stateDir == "" {
		return "", nil
	}
	path := filepath.Join(stateDir, deploymentStateFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("deployment state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return "", fmt.Errorf("deployment state %s: %w", path, err)
	}
	id := strings.TrimSuffix(string(b), "\n")
	if !validDeploymentID(id) {
		return "", fmt.Errorf("deployment state %s: the file is damaged: it must hold one deployment id (32 lowercase hex digits); pushgate redis status shows the marker in Redis", path)
	}
	return id, nil
}

func writeDeploymentFile(path, id string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, deploymentStateFile+".tmp*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(id + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// ReadMarker returns the deployment marker in Redis; nil when there is
// none. An unreadable marker is an error.
func ReadMarker(ctx context.Context, rdb redis.UniversalClient, keys Keys) (*Marker, error) {
	raw, err := rdb.Get(ctx, keys.Deployment()).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", keys.Deployment(), err)
	}
	m, err := ParseMarker(raw)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrMarkerUnreadable, keys.Deployment(), err)
	}
	return m, nil
}

// RestoreMarker puts deployment id back as the marker, for a Redis whose
// data an operator restored (from a backup, pushgate log restore): every
// process that remembers id resumes at its next check. A marker Redis
// holds meanwhile (a process without a remembered id created one) is
// named as replaced, so that its processes adopt id too. It reports
// whether it wrote anything: nothing when Redis already holds id.
func RestoreMarker(ctx context.Context, rdb redis.UniversalClient, keys Keys, id string, now time.Time) (*Marker, bool, error) {
	if !validDeploymentID(id) {
		return nil, false, errors.New("not a deployment id (32 lowercase hex digits)")
	}
	return replaceMarker(ctx, rdb, keys, func(cur *Marker) (*Marker, error) {
		if cur != nil && cur.ID == id {
			return nil, nil
		}
		return &Marker{ID: id, Created: now.UTC().Truncate(time.Second), Replaces: replaced(id, nil, cur)}, nil
	})
}

// AcceptLoss writes the marker of a new deployment, for an operator who
// accepts what Redis lost (nothing to restore it from). It replaces
// remembered (the id the processes remember: their state file, or the
// "expected" of their redis_data_lost log line) and the marker Redis
// holds, if any: every process that remembers either adopts the new id and
// resumes.
func AcceptLoss(ctx context.Context, rdb redis.UniversalClient, keys Keys, remembered string, now time.Time) (*Marker, error) {
	if remembered != "" && !validDeploymentID(remembered) {
		return nil, errors.New("not a deployment id (32 lowercase hex digits)")
	}
	m, _, err := replaceMarker(ctx, rdb, keys, func(cur *Marker) (*Marker, error) {
		switch {
		case cur == nil && remembered == "":
			return nil, errors.New("nothing to replace: Redis holds no deployment marker and no remembered id was given")
		case cur != nil && cur.ID == remembered:
			return nil, fmt.Errorf("Redis holds deployment %s, the one remembered: it lost nothing this marker can tell", remembered)
		}
		var first []string
		if remembered != "" {
			first = []string{remembered}
		}
		id := newDeploymentID()
		return &Marker{ID: id, Created: now.UTC().Truncate(time.Second), Replaces: replaced(id, first, cur)}, nil
	})
	return m, err
}

// replaced lists the ids a new marker of id replaces: first, then cur's
// id and what cur replaced, without id and repeats, at most maxReplaces.
func replaced(id string, first []string, cur *Marker) []string {
	all := slices.Clone(first)
	if cur != nil {
		all = append(all, cur.ID)
		all = append(all, cur.Replaces...)
	}
	var out []string
	for _, r := range all {
		if r != id && !slices.Contains(out, r) && len(out) < maxReplaces {
			out = append(out, r)
		}
	}
	return out
}

// markerSwap sets KEYS[1] to ARGV[2] only if it still holds ARGV[1] (""
// for missing), so that an operator's write never overwrites a marker it
// did not read.
var markerSwap = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
`)

// replaceMarker writes the marker next builds from the current one (nil
// when missing or unreadable); next returning nil writes nothing and
// returns the current marker.
func replaceMarker(ctx context.Context, rdb redis.UniversalClient, keys Keys, next func(cur *Marker) (*Marker, error)) (*Marker, bool, error) {
	key := keys.Deployment()
	for range 5 {
		raw, err := rdb.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			raw, err = "", nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("read %s: %w", key, err)
		}
		cur, _ := ParseMarker(raw) // an unreadable marker is replaced
		m, err := next(cur)
		if err != nil {
			return nil, false, err
		}
		if m == nil {
			return cur, false, nil
		}
		ok, err := markerSwap.Run(ctx, rdb, []string{key}, raw, m.encode()).Bool()
		if err != nil {
			return nil, false, fmt.Errorf("write %s: %w", key, err)
		}
		if ok {
			return m, true, nil
		}
	}
	return nil, false, fmt.Errorf("%s kept changing while it was being written; try again", key)
}

// dataOK refuses new work while Redis lost data.
func (s *Service) dataOK() error {
	var e *DataLostError
	if errors.As(s.deployment.Err(), &e) {
		return api.Errorf(api.CodeRedisDataLost, "Redis lost data (%s): new work is refused until an operator restores Redis or accepts the loss; stops still work", e.Reason())
	}
	return nil
}

// workOK refuses new work while Redis lost data or the control log fails
// its checks. Stops (kill, cancel, revoke) are refused by neither loss:
// they check only the control log (controlOK), and while Redis lost data
// no worker starts a task anyway.
func (s *Service) workOK() error {
	if err := s.dataOK(); err != nil {
		return err
	}
	return s.controlOK()
}

// DataLost returns a *DataLostError while this process finds that Redis
// lost data, for readiness.
func (s *Service) DataLost() error { return s.deployment.Err() }
