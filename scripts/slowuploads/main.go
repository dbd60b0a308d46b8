// Command slowuploads measures what slow, unauthenticated uploads cost a
// running pushgate API: it opens connections that each announce a 4 MiB
// device import and trickle the body, and samples the API process's
// resident memory meanwhile. scripts/measure-slow-uploads runs it against
// a throwaway API; BENCHMARKS.md records its figures.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "the API's address (loopback only)")
	n := flag.Int("n", 60, "concurrent uploads")
	pid := flag.Int("pid", 0, "the API process whose memory is sampled")
	forged := flag.Bool("forged", false, "send signature fields, for a key of the keyring, that do not verify")
	keyID := flag.String("key", "city-register", "key id the forged signature names")
	rate := flag.Int("rate", 256<<10, "bytes per second each upload sends")
	flag.Parse()
	if host, _, err := net.SplitHostPort(*addr); err != nil || (host != "127.0.0.1" && host != "::1") {
		fmt.Fprintln(os.Stderr, "slowuploads: --addr must be a loopback host:port")
		os.Exit(2)
	}
	if *pid <= 0 || *n <= 0 || *rate < 10 {
		fmt.Fprintln(os.Stderr, "slowuploads: --pid, --n and --rate (at least 10) are required")
		os.Exit(2)
	}

	before := memory(*pid, "VmRSS")
	peak := newPeak(*pid)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers = map[string]int{}
	)
	for i := range *n {
		wg.Go(func() {
			a := upload(*addr, i, *forged, *keyID, *rate)
			mu.Lock()
			answers[a]++
			mu.Unlock()
		})
	}
	wg.Wait()
	sampled := peak.stop()
	fmt.Printf("%d uploads (forged signature: %v): API RSS before %d MB, highest sampled %d MB, VmHWM %d MB; answers %v\n",
		*n, *forged, before, max(sampled, before), memory(*pid, "VmHWM"), answers)
}

// upload sends one 4 MiB device import at rate bytes a second until the
// API answers or the body is sent, and returns the answer's status line.
func upload(addr string, i int, forged bool, keyID string, rate int) string {
	const size = 4 << 20
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	h := fmt.Sprintf("POST /v1/devices/import HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", addr, size)
	if forged {
		h += "Content-Digest: sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:\r\n"
		h += fmt.Sprintf("Signature-Input: sig1=(\"@method\" \"@authority\" \"@path\" \"content-digest\" \"content-type\");created=%d;keyid=%q;alg=\"ed25519\";nonce=\"n%d\"\r\n",
			time.Now().Unix(), keyID, i)
		h += "Signature: sig1=:" + strings.Repeat("A", 86) + "==:\r\n"
	}
	if _, err := c.Write([]byte(h + "\r\n")); err != nil {
		return "write: " + err.Error()
	}
	answer := make(chan string, 1)
	go func() {
		l, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			l = "no answer: " + err.Error()
		}
		answer <- strings.TrimSpace(l)
	}()
	chunk := []byte(strings.Repeat("x", rate/10))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for sent := 0; sent < size; sent += len(chunk) {
		select {
		case a := <-answer:
			return a
		case <-tick.C:
		}
		if _, err := c.Write(chunk); err != nil {
			break
		}
	}
	return <-answer
}

// peak samples a process's RSS every 50 ms until stopped.
type peak struct {
	done chan struct{}
	max  chan int
}

func newPeak(pid int) *peak {
	p := &peak{done: make(chan struct{}), max: make(chan int, 1)}
	go func() {
		highest := 0
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				p.max <- highest
				return
			case <-t.C:
				highest = max(highest, memory(pid, "VmRSS"))
			}
		}
	}()
	return p
}

func (p *peak) stop() int {
	close(p.done)
	return <-p.max
}

// memory reads a field of /proc/PID/status (VmRSS, VmHWM) in MB.
func memory(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.Atoi(f[0])
				return kb / 1024
			}
		}
	}
	return -1
}
