package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	googleoption "google.golang.org/api/option"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/providers/sim"
)

// The ceiling: a bare loop over the same SDK clients the senders use, with
// no API, queue or Redis, run in a process of its own.

// barePass is what a bare-loop process reports.
type barePass struct {
	StartUnixNano int64 `json:"start_unix_nano"`
	CPUNanos      int64 `json:"cpu_ns"`
}

// RunBareLoop is one ceiling pass in a process of its own: it reads the
// simulators' files, warms its clients up, then sends one message to every
// phone at the given concurrency and writes when it started and the CPU
// time the pass took to out.
func RunBareLoop(ctx context.Context, simJSON string, conc int, title, out string) error {
	var info sim.SimInfo
	if err := readJSONFile(simJSON, &info); err != nil {
		return err
	}
	var devs []sim.Device
	if err := readJSONFile(info.Files.Devices, &devs); err != nil {
		return err
	}
	t, err := bareTargetFromFiles(info)
	if err != nil {
		return err
	}
	bc, err := newBareClients(ctx, t)
	if err != nil {
		return err
	}
	defer bc.close()
	if err := bc.sendAll(ctx, devs[:min(len(devs), 1000)], 64, "warm-up"); err != nil {
		return err
	}
	cpu0 := selfCPU()
	start := time.Now()
	if err := bc.sendAll(ctx, devs, conc, title); err != nil {
		return err
	}
	raw, err := json.Marshal(barePass{StartUnixNano: start.UnixNano(), CPUNanos: int64(selfCPU() - cpu0)})
	if err != nil {
		return err
	}
	return os.WriteFile(out, raw, 0o644)
}

// readJSONFile decodes a JSON file into v.
func readJSONFile(path string, v any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// bareTarget is what the bare loop needs to know of the simulators.
type bareTarget struct {
	roots          *x509.CertPool
	serviceAccount []byte
	projectID      string
	fcmEndpoint    string
	apnsHost       string
	apnsKey        []byte // .p8 PEM
	keyID, teamID  string
	topic          string
}

// bareTargetOf describes simulators running in this process.
func bareTargetOf(s *sim.Sim) bareTarget {
	return bareTarget{roots: s.CertPool(), serviceAccount: s.ServiceAccountJSON(), projectID: s.ProjectID(),
		fcmEndpoint: s.FCMEndpoint(), apnsHost: s.APNsHost(), apnsKey: s.APNsKeyPEM(),
		keyID: s.KeyID(), teamID: s.TeamID(), topic: s.Topic()}
}

// bareTargetFromFiles describes simulators from the files they wrote.
func bareTargetFromFiles(info sim.SimInfo) (bareTarget, error) {
	t := bareTarget{projectID: info.ProjectID, fcmEndpoint: info.FCMEndpoint, apnsHost: info.APNsHost,
		keyID: info.KeyID, teamID: info.TeamID, topic: info.Topic}
	ca, err := os.ReadFile(info.Files.CA)
	if err != nil {
		return t, err
	}
	t.roots = x509.NewCertPool()
	if !t.roots.AppendCertsFromPEM(ca) {
		return t, fmt.Errorf("%s: no certificates", info.Files.CA)
	}
	if t.serviceAccount, err = os.ReadFile(info.Files.ServiceAccount); err != nil {
		return t, err
	}
	if t.apnsKey, err = os.ReadFile(info.Files.APNsKey); err != nil {
		return t, err
	}
	return t, nil
}

// bareClients are the SDK clients the senders use, set up as the senders
// set them up (an OAuth2 HTTP/2 client for the Firebase messaging client;
// apns2 with token auth over HTTP/2), and used with nothing around them.
type bareClients struct {
	fcm        *messaging.Client
	apns       *apns2.Client
	topic      string
	transports []interface{ CloseIdleConnections() }
}

// newBareClients builds the clients for the simulators t describes.
func newBareClients(ctx context.Context, t bareTarget) (*bareClients, error) {
	// A configuration each: net/http's transport edits its own on first use.
	tlsConf := func() *tls.Config { return &tls.Config{RootCAs: t.roots, MinVersion: tls.VersionTLS12} }
	fcmH2 := &http2.Transport{TLSClientConfig: tlsConf()}
	tokenConns := &http.Transport{TLSClientConfig: tlsConf(), ForceAttemptHTTP2: true}
	apnsH2 := &http2.Transport{TLSClientConfig: tlsConf()}
	bc := &bareClients{topic: t.topic, transports: []interface{ CloseIdleConnections() }{fcmH2, tokenConns, apnsH2}}

	jwtConf, err := google.JWTConfigFromJSON(t.serviceAccount, "https://www.googleapis.com/auth/firebase.messaging")
	if err != nil {
		return nil, fmt.Errorf("ceiling: fcm credentials: %w", err)
	}
	tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: tokenConns})
	hc := &http.Client{Transport: &oauth2.Transport{Source: jwtConf.TokenSource(tokenCtx), Base: fcmH2}}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: t.projectID},
		googleoption.WithHTTPClient(hc), googleoption.WithEndpoint(t.fcmEndpoint))
	if err != nil {
		return nil, fmt.Errorf("ceiling: fcm app: %w", err)
	}
	if bc.fcm, err = app.Messaging(ctx); err != nil {
		return nil, fmt.Errorf("ceiling: fcm client: %w", err)
	}

	key, err := token.AuthKeyFromBytes(t.apnsKey)
	if err != nil {
		return nil, fmt.Errorf("ceiling: apns key: %w", err)
	}
	bc.apns = &apns2.Client{
		Host:       t.apnsHost,
		Token:      &token.Token{AuthKey: key, KeyID: t.keyID, TeamID: t.teamID},
		HTTPClient: &http.Client{Transport: apnsH2},
	}
	return bc, nil
}

// bareCollapseID is the collapse identity of a bare-loop pass.
func bareCollapseID(title string) string { return "pg-bench-" + strings.ReplaceAll(title, " ", "-") }

// close closes the idle connections.
func (bc *bareClients) close() {
	for _, t := range bc.transports {
		t.CloseIdleConnections()
	}
}

// sendAll sends one message to every device, conc calls at a time, the
// way the providers' benchmark's bare loop does: a pool of goroutines
// taking the next device. The messages are what the senders send for a
// broadcast (notification, collapse identity, TTL, the pushgate block).
func (bc *bareClients) sendAll(ctx context.Context, devs []sim.Device, conc int, title string) error {
	collapseID := bareCollapseID(title)
	meta := `{"broadcast":"` + collapseID + `"}`
	ttl := 15 * time.Minute
	now := time.Now()
	fcmTmpl := messaging.Message{
		Data:         map[string]string{"pushgate": meta},
		Notification: &messaging.Notification{Title: title, Body: "pushgate bench"},
		Android: &messaging.AndroidConfig{CollapseKey: collapseID, Priority: "high", TTL: &ttl,
			Notification: &messaging.AndroidNotification{Tag: collapseID}},
		APNS: &messaging.APNSConfig{Headers: map[string]string{
			"apns-expiration":  strconv.FormatInt(now.Add(ttl).Unix(), 10),
			"apns-priority":    "10",
			"apns-push-type":   "alert",
			"apns-collapse-id": collapseID,
		}},
	}
	payload, err := json.Marshal(map[string]any{
		"aps":      map[string]any{"alert": map[string]string{"title": title, "body": "pushgate bench"}},
		"pushgate": json.RawMessage(meta),
	})
	if err != nil {
		return err
	}

	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range min(conc, len(devs)) {
		wg.Go(func() {
			for failed.Load() == nil && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(devs) {
					return
				}
				var err error
				switch d := devs[i]; d.Platform {
				case providers.FCM:
					m := fcmTmpl
					m.Token = d.Token
					_, err = bc.fcm.Send(ctx, &m)
				case providers.APNs:
					var resp *apns2.Response
					resp, err = bc.apns.PushWithContext(ctx, &apns2.Notification{
						DeviceToken: d.Token, Topic: bc.topic, Expiration: now.Add(ttl), CollapseID: collapseID,
						Priority: apns2.PriorityHigh, PushType: apns2.PushTypeAlert, Payload: payload,
					})
					if err == nil && !resp.Sent() {
						err = fmt.Errorf("apns %d %s", resp.StatusCode, resp.Reason)
					}
				}
				if err != nil {
					err = fmt.Errorf("ceiling, %s: %w", devs[i].Platform, err)
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return *err
	}
	return ctx.Err()
}
