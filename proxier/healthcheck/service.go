package healthcheck

// The per-service health checks: for a LoadBalancer Service with
// externalTrafficPolicy Local, an HTTP server on its healthCheckNodePort
// tells the cloud load balancer whether this node has a ready local
// endpoint (200) or not (503), so traffic only goes to nodes that can serve
// it without a second hop.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
)

// ListenFunc opens a listener; net.Listen in production, a fake in tests.
type ListenFunc func(network, address string) (net.Listener, error)

// ServiceHealthServer owns one HTTP server per health-check node port (per
// listen address). Methods are safe for concurrent use.
type ServiceHealthServer struct {
	addrs        []netip.Addr // where to listen; unspecified = all
	proxyHealthy func() bool
	listen       ListenFunc
	// events, when set, gets kube-proxy's FailedToStartServiceHealthcheck
	// Warning on the Service for a port that cannot be opened.
	events   events.EventRecorder
	nodeName string

	mu       sync.RWMutex
	services map[types.NamespacedName]*instance
}

type instance struct {
	port      uint16
	servers   []*http.Server
	listeners []net.Listener
	endpoints int
}

// NewServiceHealthServer returns a server that listens on addrs (nil means
// every address of the family of 0.0.0.0) and reports proxyHealthy() in
// its answers. It starts nothing until SyncServices.
func NewServiceHealthServer(addrs []netip.Addr, proxyHealthy func() bool, listen ListenFunc) *ServiceHealthServer {
	if len(addrs) == 0 {
		addrs = []netip.Addr{netip.IPv4Unspecified()}
	}
	if listen == nil {
		listen = net.Listen
	}
	if proxyHealthy == nil {
		proxyHealthy = func() bool { return true }
	}
	return &ServiceHealthServer{addrs: addrs, proxyHealthy: proxyHealthy, listen: listen, services: map[types.NamespacedName]*instance{}}
}

// ReportTo makes s report each health check port it cannot open as an
// Event on the Service, as kube-proxy does, naming node. Call it before the
// first SyncServices.
func (s *ServiceHealthServer) ReportTo(rec events.EventRecorder, node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events, s.nodeName = rec, node
}

// SyncServices opens a server for each service's port and closes servers of
// services that are gone or whose port changed. A port that cannot be
// opened is reported in the joined error; the others still open.
func (s *ServiceHealthServer) SyncServices(ports map[types.NamespacedName]uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, inst := range s.services {
		if port, ok := ports[name]; !ok || port != inst.port {
			klog.V(2).InfoS("Closing service health check", "service", name, "port", inst.port)
			inst.close()
			delete(s.services, name)
		}
	}
	var errs []error
	for name, port := range ports {
		if s.services[name] != nil {
			continue
		}
		inst, err := s.open(name, port)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: health check node port %d: %w", name, port, err))
			if s.events != nil {
				ref := &v1.ObjectReference{APIVersion: "v1", Kind: "Service", Namespace: name.Namespace, Name: name.Name}
				s.events.Eventf(ref, nil, v1.EventTypeWarning, "FailedToStartServiceHealthcheck", "Listen",
					"node %s failed to start healthcheck %q on port %d: %v", s.nodeName, name.String(), port, err)
			}
			continue
		}
		klog.V(2).InfoS("Opened service health check", "service", name, "port", port)
		s.services[name] = inst
	}
	return errors.Join(errs...)
}

func (s *ServiceHealthServer) open(name types.NamespacedName, port uint16) (*instance, error) {
	inst := &instance{port: port}
	for _, addr := range s.addrs {
		network := "tcp4"
		if addr.Is6() {
			network = "tcp6"
		}
		ln, err := s.listen(network, net.JoinHostPort(addr.String(), strconv.Itoa(int(port))))
		if err != nil {
			inst.close()
			return nil, err
		}
		srv := &http.Server{Handler: s.handler(name), ReadHeaderTimeout: 10 * time.Second}
		inst.servers = append(inst.servers, srv)
		inst.listeners = append(inst.listeners, ln)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				klog.ErrorS(err, "Service health check server stopped", "service", name, "port", port)
			}
		}()
	}
	return inst, nil
}

// close shuts the servers down and closes the listeners itself: Shutdown
// only closes listeners that Serve has already taken over, which a server
// opened a moment ago may not have.
func (i *instance) close() {
	for _, ln := range i.listeners {
		_ = ln.Close()
	}
	for _, srv := range i.servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
}

// SyncEndpoints sets each service's count of ready local endpoints; services
// missing from counts have none.
func (s *ServiceHealthServer) SyncEndpoints(counts map[types.NamespacedName]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, inst := range s.services {
		inst.endpoints = counts[name]
	}
}

// Close stops every server.
func (s *ServiceHealthServer) Close() {
	_ = s.SyncServices(nil)
}

// handler answers as kube-proxy does: 200 when the node has a ready local
// endpoint and the proxy is healthy, else 503, with a JSON body and the
// endpoint count in X-Load-Balancing-Endpoint-Weight.
func (s *ServiceHealthServer) handler(name types.NamespacedName) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.mu.RLock()
		inst := s.services[name]
		count := 0
		if inst != nil {
			count = inst.endpoints
		}
		s.mu.RUnlock()
		healthy := s.proxyHealthy()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(count))
		if count > 0 && healthy {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintf(w, "{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}",
			name.Namespace, name.Name, count, healthy)
	})
}
