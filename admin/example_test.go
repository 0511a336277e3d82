package admin_test

import (
	"context"
	"time"

	"github.com/tcppro/tcppro/admin"
	"github.com/tcppro/tcppro/server"
)

// An embedder's server with its admin plane: Install gives the Metrics
// both of their hooks (the Observer, and the Interceptor that times
// every request) before server.New.
func ExampleMetrics_Install() {
	mux := server.NewMux()
	mux.HandleFunc("echo", func(ctx context.Context, req *server.Request) ([]byte, error) {
		return req.Body, nil
	})

	m := admin.NewMetrics(nil) // tcppro_*, go_* and process_* metrics
	cfg := server.DefaultConfig()
	m.Install(&cfg) // after any interceptors already set: it times the handler
	srv, err := server.New(cfg, mux)
	if err != nil {
		panic(err)
	}
	adm, err := admin.New(admin.Config{Metrics: m}, srv) // 127.0.0.1:7421
	if err != nil {
		panic(err)
	}
	go adm.ListenAndServe()
	go srv.ListenAndServe()

	// On SIGTERM: readiness turns false at once and the server drains,
	// while the admin plane still answers; then the plane stops.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	adm.Shutdown(ctx)
}
