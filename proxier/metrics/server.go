package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// ProxyMode is what /proxyMode reports; svcproxy only has kube-proxy's
// iptables mode.
const ProxyMode = "iptables"

// shutdownTimeout bounds how long ServeMetrics waits for in-flight requests
// when its context ends.
const shutdownTimeout = 5 * time.Second

// NewMux returns the handler of the metrics server, laid out as kube-proxy's:
//
//	/metrics       g in the Prometheus exposition format
//	/healthz       "ok" (liveness of the HTTP server itself, not of the proxy;
//	               proxy health is on the healthz server, port 10256)
//	/healthz/ping  "ok"
//	/proxyMode     "iptables"
func NewMux(g prometheus.Gatherer) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	ok := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = fmt.Fprint(w, "ok")
	}
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/healthz/ping", ok)
	mux.HandleFunc("/proxyMode", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = fmt.Fprint(w, ProxyMode)
	})
	return mux
}

// ServeMetrics serves NewMux(g) on addr (host:port) until ctx is done, then
// shuts the server down and returns nil. It returns an error at once if addr
// cannot be listened on, or later if the server fails. It does not call
// Register. kube-proxy retries a failed metrics server every 5s unless
// bindAddressHardFail is set; that policy is the caller's.
func ServeMetrics(ctx context.Context, addr string, g prometheus.Gatherer) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to start metrics server on %s: %w", addr, err)
	}
	return serve(ctx, ln, NewMux(g))
}

// serve serves h on ln until ctx is done. It closes ln.
func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errCh := make(chan error, 1)
	go func() { errCh <- srv.Serve(ln) }()
	klog.FromContext(ctx).V(2).Info("Serving metrics", "address", ln.Addr().String())

	select {
	case err := <-errCh:
		return fmt.Errorf("metrics server on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errCh; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
