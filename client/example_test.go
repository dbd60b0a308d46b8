package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/client"
	"github.com/pushgate/pushgate/signing"
)

// Example shows a backend submitting a signed broadcast and waiting until
// every phone of its audience has an outcome.
func Example() {
	// The backend's key: in production, read with signing.ParsePrivateKeyPEM
	// from the file `pushgate keygen` wrote; its public half is in the
	// gateway's keyring.
	pub, key, err := signing.GenerateKey()
	if err != nil {
		log.Fatal(err)
	}
	gatewayURL := exampleGateway(pub) // https://push.internal in production

	c, err := client.New(gatewayURL, &signing.Signer{KeyID: "city-alerts", Key: key})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	sub, err := c.Submit(ctx, &api.BroadcastRequest{
		IdempotencyKey: "flood-alert-2026-11-26-001",
		Audience:       api.Audience{Topic: "citizens"},
		Message:        api.MessageSpec{Title: "Peringatan banjir", Body: "Hindari area Manggarai.", TTL: "15m"},
	})
	if err != nil {
		log.Fatal(err) // an *api.Problem says why, with a stable code
	}
	fmt.Println("accepted:", sub.State)
	st, err := c.Wait(ctx, sub.ID, 10*time.Millisecond, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %d of %d phones sent\n", st.State, st.Counters.Sent, st.Counters.Targeted)
	// Output:
	// accepted: queued
	// completed: 3 of 3 phones sent
}

// exampleGateway stands in for a gateway so that the example runs on its
// own: it verifies every request's signature against pub, accepts one
// broadcast, and reports it completed on the second status read. The
// client's tests run against the real gateway.
func exampleGateway(pub []byte) string {
	keys, err := signing.ParseKeyring(fmt.Appendf(nil, "keys:\n  - id: city-alerts\n    public_key: %s\n    roles: [broadcast]\n    topics: [citizens]\n    max_audience: 10\n",
		mustEncode(pub)))
	if err != nil {
		log.Fatal(err)
	}
	v := signing.NewVerifier(signing.VerifierConfig{Profile: signing.DefaultProfile(), Keys: keys})
	var reads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := v.Verify(r.Context(), signing.RequestFromHTTP(r, body)); err != nil {
			w.Header().Set("Content-Type", api.ProblemContentType)
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(api.NewProblem(api.CodeOf(err), "signature refused"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		const id = "bexample"
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusAccepted)
			json.NewEncoder(w).Encode(api.SubmitResponse{ID: id, State: api.StateQueued, StatusURL: api.BroadcastPath(id)})
			return
		}
		st := api.Status{ID: id, State: api.StateSending, Counters: api.Counters{Targeted: 3, Sent: 1}}
		if reads.Add(1) >= 2 {
			st.State, st.FinishedAt, st.Counters.Sent = api.StateCompleted, time.Now(), 3
		}
		json.NewEncoder(w).Encode(st)
	}))
	return srv.URL
}

func mustEncode(pub []byte) string {
	s, err := signing.EncodePublicKey(pub)
	if err != nil {
		log.Fatal(err)
	}
	return s
}
