package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/internal/redistest"
)

// newTestDeployment builds a started Deployment on rdb remembering its id
// in dir, closed at cleanup. Its periodic check never comes: tests call
// check.
func newTestDeployment(t *testing.T, rdb redis.UniversalClient, dir string) *Deployment {
	t.Helper()
	d, err := NewDeployment(DeploymentConfig{Redis: rdb, StateDir: dir, CheckInterval: time.Hour, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// lostGauge reads d's pushgate_redis_data_lost gauge.
func lostGauge(t *testing.T, d *Deployment) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(d.gauge)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "pushgate_redis_data_lost" {
		t.Fatalf("gather: %v, %v", mfs, err)
	}
	return mfs[0].GetMetric()[0].GetGauge().GetValue()
}

func markerOf(t *testing.T, rdb redis.UniversalClient) *Marker {
	t.Helper()
	m, err := ReadMarker(context.Background(), rdb, NewKeys(""))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func dataLost(t *testing.T, d *Deployment) *DataLostError {
	t.Helper()
	var e *DataLostError
	if err := d.Err(); err != nil && !errors.As(err, &e) {
		t.Fatalf("Err() = %v, not a *DataLostError", err)
	}
	return e
}

// TestDeploymentMarkerCreatedOnce starts processes together on an empty
// Redis: one marker is created, every process adopts the same id and
// remembers it in its state directory.
func TestDeploymentMarkerCreatedOnce(t *testing.T) {
	rdb := redistest.Client(t)
	dirs := make([]string, 4)
	ds := make([]*Deployment, len(dirs))
	var wg sync.WaitGroup
	for i := range dirs {
		dirs[i] = t.TempDir()
		d, err := NewDeployment(DeploymentConfig{Redis: rdb, StateDir: dirs[i], CheckInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ds[i] = d
		t.Cleanup(d.Close)
		wg.Go(func() {
			if err := d.Start(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	m := markerOf(t, rdb)
	if m == nil || len(m.Replaces) != 0 || m.Created.IsZero() {
		t.Fatalf("marker = %+v, want one created by a process, replacing nothing", m)
	}
	for i, d := range ds {
		remembered, err := RememberedDeployment(dirs[i])
		if err != nil || d.ID() != m.ID || remembered != m.ID || d.Err() != nil {
			t.Errorf("process %d: id %q, remembered %q (%v), condition %v; want %s and no loss", i, d.ID(), remembered, err, d.Err(), m.ID)
		}
	}
}

// TestDeploymentMissingMarkerIsNeverRecreated empties Redis under a
// running process and starts another from the same state directory: both
// are in the data-lost condition, the marker stays missing, and putting the
// remembered id back (pushgate redis restore-marker) ends the condition.
func TestDeploymentMissingMarkerIsNeverRecreated(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := context.Background()
	dir := t.TempDir()
	d := newTestDeployment(t, rdb, dir)
	id := d.ID()
	if lostGauge(t, d) != 0 {
		t.Error("gauge is 1 on a Redis that lost nothing")
	}
	if err := rdb.Del(ctx, NewKeys("").Deployment()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.check(ctx); err != nil {
		t.Fatal(err)
	}
	e := dataLost(t, d)
	if e == nil || e.Expected != id || e.Found != "" || !errors.Is(d.Err(), ErrRedisDataLost) {
		t.Fatalf("after the marker went: %v; want a loss expecting %s, finding none", d.Err(), id)
	}
	if lostGauge(t, d) != 1 {
		t.Error("gauge is not 1 while Redis lost data")
	}
	if m := markerOf(t, rdb); m != nil {
		t.Fatalf("the process wrote a marker %+v over the loss", m)
	}

	restarted := newTestDeployment(t, rdb, dir)
	if e := dataLost(t, restarted); e == nil || e.Expected != id {
		t.Fatalf("restarted process: %v; want the loss of %s", restarted.Err(), id)
	}
	if m := markerOf(t, rdb); m != nil {
		t.Fatalf("the restarted process recreated the marker: %+v", m)
	}

	m, wrote, err := RestoreMarker(ctx, rdb, NewKeys(""), id, time.Now())
	if err != nil || !wrote || m.ID != id {
		t.Fatalf("RestoreMarker = %+v, %t, %v", m, wrote, err)
	}
	for _, p := range []*Deployment{d, restarted} {
		if err := p.check(ctx); err != nil {
			t.Fatal(err)
		}
		if p.Err() != nil || p.ID() != id {
			t.Errorf("after the restore: %v, id %s; want no loss, id %s", p.Err(), p.ID(), id)
		}
	}
	if lostGauge(t, d) != 0 {
		t.Error("gauge stayed 1 after the restore")
	}
	if _, wrote, err := RestoreMarker(ctx, rdb, NewKeys(""), id, time.Now()); err != nil || wrote {
		t.Errorf("a second restore wrote %t, %v; want nothing to do", wrote, err)
	}
}

// TestDeploymentOtherMarkerNeedsTheOperator has a process without a
// remembered id create a new marker on an emptied Redis: the process that
// remembers the old one stays in the condition however often it checks,
// until an operator accepts the loss; then both adopt the new id.
func TestDeploymentOtherMarkerNeedsTheOperator(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := context.Background()
	dir := t.TempDir()
	old := newTestDeployment(t, rdb, dir)
	oldID := old.ID()
	if err := rdb.Del(ctx, NewKeys("").Deployment()).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := newTestDeployment(t, rdb, t.TempDir())
	if fresh.Err() != nil || fresh.ID() == oldID {
		t.Fatalf("a fresh process on an empty Redis: %v, id %s", fresh.Err(), fresh.ID())
	}
	for range 3 {
		if err := old.check(ctx); err != nil {
			t.Fatal(err)
		}
		if e := dataLost(t, old); e == nil || e.Expected != oldID || e.Found != fresh.ID() {
			t.Fatalf("old process: %v; want the loss of %s, finding %s", old.Err(), oldID, fresh.ID())
		}
	}

	if _, err := AcceptLoss(ctx, rdb, NewKeys(""), fresh.ID(), time.Now()); err == nil {
		t.Error("accepting a loss with the id Redis holds as remembered: no error")
	}
	m, err := AcceptLoss(ctx, rdb, NewKeys(""), oldID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if m.ID == oldID || m.ID == fresh.ID() || !slices.Equal(m.Replaces, []string{oldID, fresh.ID()}) {
		t.Fatalf("accepted marker %+v; want a new id replacing %s and %s", m, oldID, fresh.ID())
	}
	for _, p := range []*Deployment{old, fresh} {
		if err := p.check(ctx); err != nil {
			t.Fatal(err)
		}
		if p.Err() != nil || p.ID() != m.ID {
			t.Errorf("after the accept: %v, id %s; want no loss, id %s", p.Err(), p.ID(), m.ID)
		}
	}
	if got, err := RememberedDeployment(dir); err != nil || got != m.ID {
		t.Errorf("state file after adopting: %q, %v; want %s", got, err, m.ID)
	}
}

// TestDeploymentUnreadableMarker writes markers that are not markers into
// Redis: each is the data-lost condition (never adopted, never
// overwritten by a process), and an operator's restore replaces it.
func TestDeploymentUnreadableMarker(t *testing.T) {
	valid := strings.Repeat("ab", 16)
	tests := []struct {
		name string
		give string
	}{
		{"not json", "garbage"},
		{"upper-case id", `{"id":"` + strings.ToUpper(valid) + `"}`},
		{"short id", `{"id":"abc"}`},
		{"no id", `{"created":"2026-01-01T00:00:00Z"}`},
		{"trailing data", `{"id":"` + valid + `"} {}`},
		{"bad replaced id", `{"id":"` + valid + `","replaces":["x"]}`},
		{"too many replaced", `{"id":"` + valid + `","replaces":[` + strings.Repeat(`"`+valid+`",`, maxReplaces) + `"` + valid + `"]}`},
		{"too long", `{"id":"` + valid + `","pad":"` + strings.Repeat("x", maxMarkerBytes) + `"}`},
		{"id is a number", `{"id":7}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseMarker(tt.give); err == nil {
				t.Fatalf("ParseMarker(%.60q) accepted it", tt.give)
			}
			rdb := redistest.Client(t)
			ctx := context.Background()
			d := newTestDeployment(t, rdb, t.TempDir())
			id := d.ID()
			key := NewKeys("").Deployment()
			if err := rdb.Set(ctx, key, tt.give, 0).Err(); err != nil {
				t.Fatal(err)
			}
			if err := d.check(ctx); err != nil {
				t.Fatal(err)
			}
			if e := dataLost(t, d); e == nil || e.Unreadable == "" || e.Expected != id {
				t.Fatalf("after an unreadable marker: %v", d.Err())
			}
			fresh, err := NewDeployment(DeploymentConfig{Redis: rdb, StateDir: t.TempDir(), CheckInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(fresh.Close)
			if err := fresh.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if e := dataLost(t, fresh); e == nil || e.Expected != "" || fresh.ID() != "" {
				t.Errorf("a fresh process adopted an unreadable marker: %v, id %q", fresh.Err(), fresh.ID())
			}
			if raw, _ := rdb.Get(ctx, key).Result(); raw != tt.give {
				t.Errorf("a process overwrote the unreadable marker with %q", raw)
			}
			if _, wrote, err := RestoreMarker(ctx, rdb, NewKeys(""), id, time.Now()); err != nil || !wrote {
				t.Fatalf("restore over an unreadable marker: %t, %v", wrote, err)
			}
			if err := d.check(ctx); err != nil || d.Err() != nil {
				t.Errorf("after the restore: %v, %v", err, d.Err())
			}
		})
	}
}

// TestDeploymentStateFileIsUntrusted starts processes whose state file
// holds anything but a deployment id: each refuses with an error that
// names the file, rather than forgetting what it remembered.
func TestDeploymentStateFileIsUntrusted(t *testing.T) {
	valid := strings.Repeat("0f", 16)
	tests := []struct {
		name    string
		give    string
		wantErr bool
	}{
		{"an id and a newline", valid + "\n", false},
		{"an id without a newline", valid, false},
		{"empty", "", true},
		{"garbage", "not a deployment id\n", true},
		{"upper case", strings.ToUpper(valid) + "\n", true},
		{"two lines", valid + "\n" + valid + "\n", true},
		{"spaces around", " " + valid + " \n", true},
		{"a long file", strings.Repeat(valid, 100), true},
		{"binary", "\x00\xff" + valid[2:], true},
	}
	rdb := redistest.Client(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, deploymentStateFile)
			if err := os.WriteFile(path, []byte(tt.give), 0o600); err != nil {
				t.Fatal(err)
			}
			d, err := NewDeployment(DeploymentConfig{Redis: rdb, StateDir: dir})
			if !tt.wantErr {
				if err != nil || d.ID() != valid {
					t.Fatalf("NewDeployment = %v, id %q; want id %s", err, d.ID(), valid)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("NewDeployment with a state file of %.40q = %v; want an error naming %s as damaged", tt.give, err, path)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("the error is more than one line: %q", err)
			}
		})
	}
	t.Run("a directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, deploymentStateFile), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := NewDeployment(DeploymentConfig{Redis: rdb, StateDir: dir}); err == nil {
			t.Error("a directory as the state file: no error")
		}
	})
}

// TestDeploymentRedisDownIsNotALoss checks that a Redis that does not
// answer is an error of the check, not the data-lost condition, and that
// nothing is created or forgotten.
func TestDeploymentRedisDownIsNotALoss(t *testing.T) {
	dir := t.TempDir()
	d := newTestDeployment(t, redistest.Client(t), dir)
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { down.Close() })
	cut, err := NewDeployment(DeploymentConfig{Redis: down, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := cut.Start(context.Background()); err == nil {
		cut.Close()
		t.Fatal("Start against a Redis that does not answer: no error")
	}
	if cut.Err() != nil || cut.ID() != d.ID() {
		t.Errorf("an unreachable Redis: %v, id %q; want no condition, id %s kept", cut.Err(), cut.ID(), d.ID())
	}
}

// FuzzParseMarker feeds arbitrary values as the marker read from Redis:
// nothing panics, and what parses has well-formed ids and survives an
// encode.
func FuzzParseMarker(f *testing.F) {
	valid := strings.Repeat("ab", 16)
	for _, seed := range []string{
		`{"id":"` + valid + `","created":"2026-01-01T00:00:00Z"}`,
		`{"id":"` + valid + `","replaces":["` + strings.Repeat("cd", 16) + `"]}`,
		`{"id":"` + valid + `","future":{"x":1}}`,
		`{"id":null}`, `[]`, `null`, ``, `{`, "\xff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		m, err := ParseMarker(raw)
		if err != nil {
			return
		}
		if !validDeploymentID(m.ID) || len(m.Replaces) > maxReplaces {
			t.Fatalf("accepted %+v", m)
		}
		again, err := ParseMarker(m.encode())
		if err != nil || again.ID != m.ID || !slices.Equal(again.Replaces, m.Replaces) {
			t.Fatalf("encode of %+v parses as %+v, %v", m, again, err)
		}
	})
}
