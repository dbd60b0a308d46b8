package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pushgate/pushgate/internal/stack"
	"github.com/redis/go-redis/v9"
)

// Child processes of the bench: Redis, the gateway, the bare loop; and
// what /proc says about them.

// childProc is a process the bench started. It runs in its own process
// group, so that a Ctrl-C at the terminal reaches only the bench, which
// then stops its children in order; and it gets SIGKILL if the bench dies
// without stopping it.
type childProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has been waited for
	waitErr error         // set before done is closed
}

// startChild starts bin with args, its output going to logPath.
func startChild(name, logPath, bin string, args, env []string) (*childProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &childProc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *childProc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *childProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then sends
// SIGKILL, and waits for the process.
func (p *childProc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
}

// printTail writes the last n lines of the process's log.
func (p *childProc) printTail(w io.Writer, n int) {
	f, err := os.Open(p.logPath)
	if err != nil {
		return
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "--- last lines of %s's log:\n", p.name)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// startRedis starts a throwaway redis-server on a free loopback port,
// keeping nothing on disk, and returns it with its URL.
func startRedis(ctx context.Context, dir string, env []string) (*childProc, string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, "", errors.New("redis-server is not on PATH: install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), or pass --redis URL")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	// A free port can be taken between choosing it and binding it: try a
	// few.
	var lastErr error
	for range 5 {
		addr, err := freeLoopbackAddr()
		if err != nil {
			return nil, "", err
		}
		host, port, _ := net.SplitHostPort(addr)
		p, err := startChild("redis-server", filepath.Join(dir, "redis.log"), bin, []string{
			"--port", port, "--bind", host, "--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no",
		}, env)
		if err != nil {
			return nil, "", err
		}
		u := "redis://" + addr + "/0"
		if lastErr = waitRedis(ctx, u, p); lastErr == nil {
			return p, u, nil
		}
		p.stop(time.Second)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", fmt.Errorf("start redis-server: %w", lastErr)
}

// waitRedis waits until the Redis at u answers PING, for up to five
// seconds, or until p exits.
func waitRedis(ctx context.Context, u string, p *childProc) error {
	opts, err := redis.ParseURL(u)
	if err != nil {
		return err
	}
	c := redis.NewClient(opts)
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := c.Ping(ctx).Err()
		switch {
		case err == nil:
			return nil
		case p.exited():
			return fmt.Errorf("redis-server exited: %v", p.waitErr)
		case time.Now().After(deadline):
			return err
		}
		if err := stack.Pause(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// freeLoopbackAddr returns a loopback address with a port nothing listens
// on now.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// procsCPU returns the user plus system CPU time of each process.
func procsCPU(procs []*childProc) ([]time.Duration, error) {
	out := make([]time.Duration, len(procs))
	for i, p := range procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
		if err != nil {
			return nil, fmt.Errorf("cpu time of %s: %w", p.name, err)
		}
		// The command name, in parentheses, may hold spaces: fields are
		// counted after its closing parenthesis, where field 3 (state)
		// starts; utime and stime are fields 14 and 15.
		i0 := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i0+1:]))
		if len(f) < 13 {
			return nil, fmt.Errorf("cpu time of %s: short /proc stat", p.name)
		}
		ut, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("cpu time of %s: %w", p.name, err)
		}
		out[i] = time.Duration(ut+st) * time.Second / clockTicks
	}
	return out, nil
}

// selfCPU is the user plus system CPU time of this process so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procPeakRSSKB returns a process's peak resident set size (VmHWM) in kB.
func procPeakRSSKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("peak memory: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("peak memory: %w", err)
			}
			return kb, nil
		}
	}
	return 0, fmt.Errorf("peak memory: no VmHWM in /proc/%d/status", pid)
}
