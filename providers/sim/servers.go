package sim

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// server is one listening simulator server. It counts the connections it
// accepts and tracks them, so that close can wait for their goroutines.
type server struct {
	name     string
	addr     string
	srv      *http.Server
	accepted atomic.Int64
	conns    sync.WaitGroup
	served   chan error
}

// connInfo is what a handler knows of the connection it serves.
type connInfo struct {
	tls *tls.Conn
	// h2 is set on APNs HTTP/2 connections, whose stream limit the
	// simulator manages (see h2conn.go); raised once it was lifted.
	h2      *h2Conn
	raised  atomic.Bool
	dropped atomic.Bool
}

type connInfoKey struct{}

func connInfoFrom(ctx context.Context) *connInfo {
	ci, _ := ctx.Value(connInfoKey{}).(*connInfo)
	return ci
}

// startTLSServer serves handler over TLS on ln: HTTP/2 through
// golang.org/x/net/http2 for clients that negotiate h2 (with the stream
// limit rewritten when limitStreams is set), HTTP/1.1 for the others when
// tlsCfg offers it.
func (s *Sim) startTLSServer(name string, ln net.Listener, tlsCfg *tls.Config, handler http.Handler, maxStreams uint32, limitStreams bool) *server {
	sv := s.newServer(name, ln, handler)
	sv.srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		ci := &connInfo{}
		ci.tls, _ = c.(*tls.Conn)
		return context.WithValue(ctx, connInfoKey{}, ci)
	}
	h2srv := &http2.Server{MaxConcurrentStreams: maxStreams}
	initial, max := s.cfg.InitialStreams, s.cfg.MaxStreams
	sv.srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		"h2": func(hs *http.Server, c *tls.Conn, h http.Handler) {
			// h is net/http's per-connection handler; its BaseContext
			// carries the connInfo from ConnContext.
			ctx := context.Background()
			if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
				ctx = bc.BaseContext()
			}
			var conn net.Conn = c
			if ci := connInfoFrom(ctx); ci != nil && limitStreams {
				ci.h2 = newH2Conn(c, initial, max, &s.stats.refused)
				conn = ci.h2
			}
			h2srv.ServeConn(conn, &http2.ServeConnOpts{Context: ctx, BaseConfig: hs, Handler: h})
		},
	}
	go sv.serve(tls.NewListener(ln, tlsCfg))
	return sv
}

// startPlainServer serves handler over plain HTTP/1.1.
func (s *Sim) startPlainServer(name string, ln net.Listener, handler http.Handler) *server {
	sv := s.newServer(name, ln, handler)
	go sv.serve(ln)
	return sv
}

func (s *Sim) newServer(name string, ln net.Listener, handler http.Handler) *server {
	sv := &server{name: name, addr: ln.Addr().String(), served: make(chan error, 1)}
	sv.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler().WithAttrs([]slog.Attr{slog.String("server", name)}), slog.LevelDebug),
		ConnState: func(c net.Conn, st http.ConnState) {
			// StateNew runs in the accept loop before the connection's
			// goroutine starts, StateClosed (or StateHijacked) as that
			// goroutine ends, so the group covers every connection
			// goroutine. Close waits for the accept loop first, so no Add
			// races the Wait.
			switch st {
			case http.StateNew:
				sv.accepted.Add(1)
				sv.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				sv.conns.Done()
			}
		},
	}
	return sv
}

func (sv *server) serve(ln net.Listener) {
	sv.served <- sv.srv.Serve(ln)
}

// close closes the listener and every connection, and waits for the
// accept loop and the connection goroutines.
func (sv *server) close() error {
	err := sv.srv.Close()
	serveErr := <-sv.served
	sv.conns.Wait()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return errors.Join(err, serveErr)
	}
	return err
}

// readBody reads up to limit+1 bytes of r's body, so that the caller can
// tell a body over the limit, in one allocation when the length is known.
func readBody(r *http.Request, limit int) ([]byte, error) {
	size := 512
	if r.ContentLength >= 0 && r.ContentLength <= int64(limit) {
		size = int(r.ContentLength) + 1 // room to see EOF without growing
	}
	buf := make([]byte, 0, size)
	for len(buf) <= limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Body.Read(buf[len(buf):min(cap(buf), limit+1)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}
