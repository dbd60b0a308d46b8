package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a private redis-server process for tests that kill, restart or
// flush Redis, which the shared server of ./scripts/test must never see.
// It listens on 127.0.0.1 on a port chosen at start and kept across
// restarts, and keeps its data in a temporary directory.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	aof  bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	clients []*redis.Client // handed out by Client, awaited by Restart
}

// StartServer starts a private redis-server for the test, stopped at
// cleanup. With aof it persists like a production deployment should
// (appendonly yes, appendfsync everysec); without it, a restart loses
// everything. The test is skipped (failed under CI) when redis-server is
// not installed; ./scripts/test installs it.
func StartServer(tb testing.TB, aof bool) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server is not installed: run the suite with ./scripts/test, which installs it"
		if os.Getenv("CI") != "" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), aof: aof}
	for try := 0; ; try++ {
		s.port = freePort(tb)
		if err := s.start(); err == nil {
			break
		} else if try == 5 {
			tb.Fatalf("redistest: start redis-server: %v", err)
		}
	}
	tb.Cleanup(func() { s.Kill() })
	return s
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: pick a port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Client returns a new client of database 0, closed at cleanup.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.tb.Cleanup(func() { _ = c.Close() })
	s.mu.Lock()
	s.clients = append(s.clients, c)
	s.mu.Unlock()
	return c
}

// URL is a redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

func (s *Server) start() error {
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--daemonize", "no", "--logfile", filepath.Join(s.dir, "redis.log")}
	if s.aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	} else {
		args = append(args, "--appendonly", "no")
	}
	cmd := exec.Command(s.bin, args...)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(time.Minute) // hang guard: a loaded AOF may take a while
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited: %v (log in %s)", err, s.dir)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return fmt.Errorf("redis-server did not answer within a minute: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	s.cmd = cmd // reaped by the goroutine above when it exits
	s.mu.Unlock()
	return nil
}

// Kill stops the server with SIGKILL, as a crash would: what the AOF has
// not fsynced yet is lost. Killing a stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	// Wait until the port is free again, so a restart can bind it.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Restart starts the server again on the same port and directory, loading
// its AOF when it has one, and returns once every client Client handed out
// reaches it: a go-redis pool whose dials failed while the server was down
// answers with the last dial error for a while before it dials again, and
// a test acting right after the restart would meet that, not the server.
func (s *Server) Restart() {
	s.tb.Helper()
	var err error
	for try := 0; try < 50; try++ {
		if err = s.start(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // the port may still be in TIME_WAIT
	}
	if err != nil {
		s.tb.Fatalf("redistest: restart redis-server: %v", err)
	}
	s.mu.Lock()
	clients := slices.Clone(s.clients)
	s.mu.Unlock()
	deadline := time.Now().Add(time.Minute) // hang guard
	for _, c := range clients {
		for err := c.Ping(context.Background()).Err(); err != nil && !errors.Is(err, redis.ErrClosed); err = c.Ping(context.Background()).Err() {
			if time.Now().After(deadline) {
				s.tb.Fatalf("redistest: hung: a client still cannot reach the restarted redis-server after a minute")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// aofTail returns the path of the AOF file Redis is appending to: the
// newest incremental file of its appendonlydir.
func (s *Server) aofTail() string {
	s.tb.Helper()
	files, err := filepath.Glob(filepath.Join(s.dir, "appendonlydir", "*.incr.aof"))
	if err != nil || len(files) == 0 {
		s.tb.Fatalf("redistest: no incremental AOF in %s (was the server started with aof?)", s.dir)
	}
	newest, seq := "", -1
	for _, f := range files {
		// appendonly.aof.<seq>.incr.aof
		parts := strings.Split(filepath.Base(f), ".")
		if len(parts) < 5 {
			continue
		}
		if n, err := strconv.Atoi(parts[len(parts)-3]); err == nil && n > seq {
			newest, seq = f, n
		}
	}
	if newest == "" {
		s.tb.Fatalf("redistest: no incremental AOF in %s", s.dir)
	}
	return newest
}

// AOFMark is a point in the server's write history.
type AOFMark struct {
	file string
	size int64
}

// Mark returns the current end of the AOF: what a power cut right now
// would keep, had it been fsynced.
func (s *Server) Mark() AOFMark {
	s.tb.Helper()
	f := s.aofTail()
	fi, err := os.Stat(f)
	if err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
	return AOFMark{file: f, size: fi.Size()}
}

// CrashBackTo kills the server and starts it again from its AOF cut back
// to mark, as a power cut that lost the writes not yet fsynced would:
// everything written after mark is gone.
func (s *Server) CrashBackTo(m AOFMark) {
	s.tb.Helper()
	s.Kill()
	if err := os.Truncate(m.file, m.size); err != nil {
		s.tb.Fatalf("redistest: cut the AOF back: %v", err)
	}
	s.Restart()
}

// Crash kills the server with SIGKILL and starts it again from its AOF.
func (s *Server) Crash() {
	s.tb.Helper()
	s.Kill()
	s.Restart()
}
