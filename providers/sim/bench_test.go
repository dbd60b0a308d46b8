package sim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/pushgate/pushgate/providers"
)

// The simulator benchmarks drive each simulator with a bare HTTP/2 client
// running in a child process (this test binary, re-executed), so that the
// CPU time measured in the benchmark process is the simulator's alone.

const (
	// benchPhones is the population the benchmarks address.
	benchPhones = 100_000
	// benchWorkers is how many requests are in flight at once: below
	// FCM's 100 streams per connection, so each simulator serves one
	// connection.
	benchWorkers = 64
	// envBenchClient makes TestBenchClient act as the load generator.
	envBenchClient = "PUSHGATE_SIM_BENCH_CLIENT"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkFCMSim(b *testing.B) {
	benchSim(b, providers.FCM, Config{QuotaPerMinute: -1})
}

func BenchmarkAPNsSim(b *testing.B) {
	benchSim(b, providers.APNs, Config{})
}

// BenchmarkH2Floor measures what the simulators cannot go below on this
// machine: the same TLS and golang.org/x/net/http2 server stack answering
// the APNs benchmark's requests with a bare 200.
func BenchmarkH2Floor(b *testing.B) {
	s := newSim(b, Config{})
	s.NewDevices(benchPhones, 0, 1)
	files, err := s.WriteFiles(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	h2srv := &http2.Server{}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusOK)
		}),
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			"h2": func(hs *http.Server, c *tls.Conn, h http.Handler) {
				h2srv.ServeConn(c, &http2.ServeConnOpts{BaseConfig: hs, Handler: h})
			},
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(tls.NewListener(ln, s.creds.serverTLS("h2")))
	}()
	defer func() {
		hs.Close()
		<-done
	}()
	var info SimInfo
	raw, _ := os.ReadFile(files.SimJSON)
	json.Unmarshal(raw, &info)
	info.APNsHost = "https://" + ln.Addr().String()
	raw, _ = json.Marshal(info)
	if err := os.WriteFile(files.SimJSON, raw, 0o644); err != nil {
		b.Fatal(err)
	}
	runClient(b, files.SimJSON, providers.APNs)
}

// benchSim runs b.N requests against one simulator from a child process
// and reports requests per second (as the client saw them) and the
// simulator's CPU time per request.
func benchSim(b *testing.B, p providers.Platform, cfg Config) {
	s := newSim(b, cfg)
	share := 1.0
	if p == providers.APNs {
		share = 0
	}
	s.NewDevices(benchPhones, share, 1)
	files, err := s.WriteFiles(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	runClient(b, files.SimJSON, p)
	if got := s.Stats().Deliveries; got != int64(b.N) {
		b.Fatalf("%d deliveries for %d requests", got, b.N)
	}
}

// runClient runs the load generator in a child process against the
// servers sim.json names, and reports the client's request rate and this
// process's CPU time per request.
func runClient(b *testing.B, simJSON string, p providers.Platform) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchClient$")
	cmd.Env = append(os.Environ(), envBenchClient+"="+strings.Join([]string{simJSON, string(p), strconv.Itoa(b.N)}, ","))
	cmd.Stderr = os.Stderr
	runtime.GC()
	b.ResetTimer()
	cpu0 := cpuTime()
	out, err := cmd.Output()
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if err != nil {
		b.Fatalf("client: %v\n%s", err, out)
	}
	var wall time.Duration
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "wall "); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				b.Fatal(err)
			}
			wall = d
		}
	}
	if wall == 0 {
		b.Fatalf("client said nothing useful:\n%s", out)
	}
	b.ReportMetric(float64(b.N)/wall.Seconds(), "req/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "sim-cpu-µs/req")
}

// TestBenchClient is the benchmarks' load generator; it does nothing
// unless a benchmark started it.
func TestBenchClient(t *testing.T) {
	spec := os.Getenv(envBenchClient)
	if spec == "" {
		t.Skip("runs only as the benchmark client")
	}
	parts := strings.Split(spec, ",")
	simFile, platform := parts[0], providers.Platform(parts[1])
	n, _ := strconv.Atoi(parts[2])
	var info SimInfo
	raw, err := os.ReadFile(simFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatal(err)
	}
	var devs []Device
	raw, _ = os.ReadFile(info.Files.Devices)
	json.Unmarshal(raw, &devs)
	caPEM, _ := os.ReadFile(info.Files.CA)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	// The client closes its connections itself when done, so that goleak
	// in this process finds nothing running.
	var connsMu sync.Mutex
	var conns []net.Conn
	defer func() {
		connsMu.Lock()
		defer connsMu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	tr := &http2.Transport{
		TLSClientConfig:            &tls.Config{RootCAs: pool},
		StrictMaxConcurrentStreams: true,
		DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
			if err == nil {
				connsMu.Lock()
				conns = append(conns, c)
				connsMu.Unlock()
			}
			return c, err
		},
	}
	hc := &http.Client{Transport: tr}

	var newReq func(i int) *http.Request
	switch platform {
	case providers.FCM:
		sa, _ := os.ReadFile(info.Files.ServiceAccount)
		conf, err := google.JWTConfigFromJSON(sa, fcmScope)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := conf.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, hc)).Token()
		if err != nil {
			t.Fatal(err)
		}
		auth := "Bearer " + tok.AccessToken
		url := info.FCMEndpoint + "/projects/" + info.ProjectID + "/messages:send"
		const head = `{"message":{"token":"`
		const tail = `","notification":{"title":"Peringatan banjir","body":"Ketinggian air di Manggarai naik. Hindari area tersebut."},` +
			`"data":{"pushgate":"{\"broadcast\":\"b-2026-11-26-001\"}","url":"jaki://alerts/123"},` +
			`"android":{"collapse_key":"b-2026-11-26-001","priority":"high","ttl":"900s","notification":{"tag":"b-2026-11-26-001"}}}}`
		newReq = func(i int) *http.Request {
			req, _ := http.NewRequest("POST", url, strings.NewReader(head+devs[i%len(devs)].Token+tail))
			req.Header.Set("Authorization", auth)
			req.Header.Set("Content-Type", "application/json")
			return req
		}
	case providers.APNs:
		key, err := token.AuthKeyFromFile(info.Files.APNsKey)
		if err != nil {
			t.Fatal(err)
		}
		bearer := "bearer " + (&token.Token{AuthKey: key, KeyID: info.KeyID, TeamID: info.TeamID}).GenerateIfExpired()
		expiry := fmt.Sprint(time.Now().Add(time.Hour).Unix())
		const body = `{"aps":{"alert":{"title":"Peringatan banjir","body":"Ketinggian air di Manggarai naik. Hindari area tersebut."}},` +
			`"pushgate":{"broadcast":"b-2026-11-26-001"},"url":"jaki://alerts/123"}`
		newReq = func(i int) *http.Request {
			req, _ := http.NewRequest("POST", info.APNsHost+"/3/device/"+devs[i%len(devs)].Token, strings.NewReader(body))
			h := req.Header
			h.Set("Authorization", bearer)
			h.Set("Apns-Topic", info.Topic)
			h.Set("Apns-Push-Type", "alert")
			h.Set("Apns-Priority", "10")
			h.Set("Apns-Expiration", expiry)
			h.Set("Apns-Collapse-Id", "b-2026-11-26-001")
			h.Set("Content-Type", "application/json")
			return req
		}
	}

	var next, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range benchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				resp, err := hc.Do(newReq(i))
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d requests failed", f, n)
	}
	fmt.Printf("wall %v\n", time.Since(start))
}

// BenchmarkMillionPhones reports the memory a million registered phones
// take, tokens included.
func BenchmarkMillionPhones(b *testing.B) {
	for range b.N {
		s := newSim(b, Config{})
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s.NewDevices(1_000_000, 0.6, 1)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "MB")
		if st := s.Stats(); st.Phones[providers.FCM]+st.Phones[providers.APNs] != 1_000_000 {
			b.Fatal("wrong population")
		}
	}
}
