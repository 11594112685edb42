package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/svcproxy/svcproxy/proxier/metrics"
)

// ToBeDeletedTaint is the taint the Cluster Autoscaler puts on a node it is
// about to delete. A node with it is not eligible (/healthz answers 503).
const ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// Defaults, as kube-proxy's.
const (
	DefaultBindAddress   = "0.0.0.0:10256"
	DefaultHealthTimeout = 2 * 30 * time.Second // 2 × the default iptables.syncPeriod
)

// ProxyHealthConfig configures a ProxyHealth.
type ProxyHealthConfig struct {
	// BindAddress is the host:port Run serves on.
	BindAddress string
	// HealthTimeout is how long a queued change may wait for a sync before
	// the proxy counts as unhealthy. Use 2 × the sync period, as kube-proxy.
	HealthTimeout time.Duration
	// Clock is the time source; nil means the real clock. Tests set a fake.
	Clock clock.PassiveClock
}

// Defaults fills unset fields with their defaults.
func (c *ProxyHealthConfig) Defaults() {
	if c.BindAddress == "" {
		c.BindAddress = DefaultBindAddress
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = DefaultHealthTimeout
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
}

// Validate returns every problem with c, joined, or nil.
func (c *ProxyHealthConfig) Validate() error {
	var errs []error
	if c.HealthTimeout <= 0 {
		errs = append(errs, fmt.Errorf("healthz: HealthTimeout (%v) must be positive", c.HealthTimeout))
	}
	if host, port, err := net.SplitHostPort(c.BindAddress); err != nil {
		errs = append(errs, fmt.Errorf("healthz: BindAddress %q: must be IP:port", c.BindAddress))
	} else {
		if host != "" && net.ParseIP(host) == nil {
			errs = append(errs, fmt.Errorf("healthz: BindAddress %q: %q is not an IP address", c.BindAddress, host))
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("healthz: BindAddress %q: %q is not a valid port", c.BindAddress, port))
		}
	}
	return errors.Join(errs...)
}

// ProxierHealth is the health of the proxier for one IP family.
type ProxierHealth struct {
	LastUpdated time.Time `json:"lastUpdated"`
	Healthy     bool      `json:"healthy"`
}

// Status is the JSON body of /healthz and /livez, field for field as
// kube-proxy's.
type Status struct {
	// LastUpdated is the latest Updated time over all families; in a
	// healthy response it is the current time (kube-proxy's compatibility
	// behaviour: it used to be the last sync-loop run).
	LastUpdated time.Time `json:"lastUpdated"`
	CurrentTime time.Time `json:"currentTime"`
	// NodeEligible is set in /healthz responses only.
	NodeEligible *bool `json:"nodeEligible,omitempty"`
	// Healthy is true when every family is healthy. It does not include
	// node eligibility.
	Healthy bool                          `json:"healthy"`
	Status  map[v1.IPFamily]ProxierHealth `json:"status,omitempty"`
}

// ProxyHealth tracks proxier health and serves it. Its methods are safe for
// concurrent use.
type ProxyHealth struct {
	addr    string
	timeout time.Duration
	clock   clock.PassiveClock

	mu            sync.RWMutex
	lastUpdated   map[v1.IPFamily]time.Time
	oldestPending map[v1.IPFamily]time.Time
	nodeEligible  bool
}

// NewProxyHealth validates cfg (after filling defaults) and returns a ProxyHealth. It
// starts nothing; call Run to serve. The node counts as not eligible until
// SyncNode is called with it.
func NewProxyHealth(cfg ProxyHealthConfig) (*ProxyHealth, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &ProxyHealth{
		addr:          cfg.BindAddress,
		timeout:       cfg.HealthTimeout,
		clock:         cfg.Clock,
		lastUpdated:   map[v1.IPFamily]time.Time{},
		oldestPending: map[v1.IPFamily]time.Time{},
	}, nil
}

// QueueUpdated records that the proxier for family has a change it has not
// yet programmed. Only the first call since the last Updated counts: health
// is measured from the oldest pending change.
func (h *ProxyHealth) QueueUpdated(family v1.IPFamily) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, pending := h.oldestPending[family]; !pending {
		h.oldestPending[family] = h.clock.Now()
	}
}

// Updated records that the proxier for family finished a sync, programming
// every change queued so far. Call it once at start-up too (kube-proxy does,
// before its first sync), so that a first sync that never succeeds shows.
func (h *ProxyHealth) Updated(family v1.IPFamily) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.oldestPending, family)
	h.lastUpdated[family] = h.clock.Now()
}

// SyncNode records the current state of this node's Node object; call it
// from the node informer's add and update handlers, and with nil on delete.
// The node is eligible when node is non-nil, has no deletion timestamp, and
// has no ToBeDeletedTaint.
func (h *ProxyHealth) SyncNode(node *v1.Node) {
	eligible := node != nil && node.DeletionTimestamp.IsZero()
	if eligible {
		for _, t := range node.Spec.Taints {
			if t.Key == ToBeDeletedTaint {
				eligible = false
				break
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodeEligible = eligible
}

// NodeEligible reports the eligibility recorded by the last SyncNode
// (false before the first).
func (h *ProxyHealth) NodeEligible() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.nodeEligible
}

// Health returns the current health; Status.NodeEligible is left nil.
func (h *ProxyHealth) Health() Status {
	h.mu.RLock()
	defer h.mu.RUnlock()
	now := h.clock.Now()
	st := Status{CurrentTime: now, Healthy: true, Status: map[v1.IPFamily]ProxierHealth{}}
	for family, last := range h.lastUpdated {
		if last.After(st.LastUpdated) {
			st.LastUpdated = last
		}
		healthy := true
		if queued, pending := h.oldestPending[family]; pending && now.Sub(queued) >= h.timeout {
			healthy = false
			st.Healthy = false
		}
		st.Status[family] = ProxierHealth{LastUpdated: last, Healthy: healthy}
	}
	return st
}

// IsHealthy reports whether every family is healthy (the /livez answer; it
// ignores node eligibility).
func (h *ProxyHealth) IsHealthy() bool { return h.Health().Healthy }

// Handler returns the handler for /healthz and /livez (404 elsewhere).
// Each answer is JSON (Status), 200 when healthy and 503 otherwise, and is
// counted in kubeproxy_proxy_healthz_total / kubeproxy_proxy_livez_total.
func (h *ProxyHealth) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := h.Health()
		eligible := h.NodeEligible()
		st.NodeEligible = &eligible
		h.respond(w, st, st.Healthy && eligible, metrics.ProxyHealthzTotal)
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		st := h.Health()
		h.respond(w, st, st.Healthy, metrics.ProxyLivezTotal)
	})
	return mux
}

func (h *ProxyHealth) respond(w http.ResponseWriter, st Status, healthy bool, count *prometheus.CounterVec) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	code := http.StatusOK
	if healthy {
		st.LastUpdated = h.clock.Now()
	} else {
		code = http.StatusServiceUnavailable
	}
	count.WithLabelValues(strconv.Itoa(code)).Inc()
	w.WriteHeader(code)
	body, _ := json.Marshal(st) // cannot fail: plain struct
	_, _ = w.Write(body)
}

// Run serves Handler on the bind address until ctx is done, then shuts the
// server down and returns nil. It returns an error at once if the address
// cannot be listened on, or later if the server fails. kube-proxy retries a
// failed healthz server every 5s unless bindAddressHardFail is set; that
// policy is the caller's.
func (h *ProxyHealth) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", h.addr)
	if err != nil {
		return fmt.Errorf("failed to start proxy healthz on %s: %w", h.addr, err)
	}
	return h.serve(ctx, ln)
}

// serve serves Handler on ln until ctx is done. It closes ln.
func (h *ProxyHealth) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: h.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errCh := make(chan error, 1)
	go func() { errCh <- srv.Serve(ln) }()
	klog.FromContext(ctx).V(2).Info("Serving proxy healthz", "address", ln.Addr().String())

	select {
	case err := <-errCh:
		return fmt.Errorf("proxy healthz on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errCh; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
