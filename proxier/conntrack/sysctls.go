package conntrack

import (
	"context"
	"fmt"
	"time"

	"github.com/svcproxy/svcproxy/proxier/host"
	"k8s.io/klog/v2"
)

// Settings are kube-proxy's conntrack settings (KubeProxyConfiguration
// conntrack.*). Zero values leave the kernel's value alone.
type Settings struct {
	MaxPerCore, Min       int
	TCPEstablishedTimeout time.Duration
	TCPCloseWaitTimeout   time.Duration
	TCPBeLiberal          bool
	UDPTimeout            time.Duration
	UDPStreamTimeout      time.Duration
}

// maxConntrackLimit caps the scaled maximum, as kube-proxy does.
const maxConntrackLimit = 1048576

// hashsizeParam is nf_conntrack's hash-table size module parameter.
const hashsizeParam = "/sys/module/nf_conntrack/parameters/hashsize"

// Max is the nf_conntrack_max kube-proxy would set: MaxPerCore × CPUs
// (capped at 1,048,576), at least Min; 0 when MaxPerCore is 0 (leave it).
func Max(s Settings, numCPU int) int {
	if s.MaxPerCore <= 0 {
		return 0
	}
	scaled := s.MaxPerCore * numCPU
	switch {
	case scaled > maxConntrackLimit:
		return maxConntrackLimit
	case scaled > s.Min:
		return scaled
	}
	return s.Min
}

// SetSysctls applies s the way kube-proxy does at start-up: each value is
// written only when it differs from the kernel's, and nf_conntrack_max
// also grows the hash table to max/4. The first failure is returned,
// naming the setting; kube-proxy then refuses to start, and so does the
// daemon (inside a network namespace nf_conntrack_max is read-only: pass
// --conntrack-max-per-core=0 there, as kind does for kube-proxy).
func SetSysctls(ctx context.Context, sys host.IntSysctls, s Settings, numCPU int) error {
	logger := klog.FromContext(ctx)
	if max := Max(s, numCPU); max > 0 {
		if err := host.EnsureSysctl(logger, sys, "net/netfilter/nf_conntrack_max", max); err != nil {
			return err
		}
		if hash, err := sys.Get(hashsizeParam); err == nil && hash < max/4 {
			logger.Info("Setting conntrack hashsize", "hashsize", max/4)
			if err := sys.Set(hashsizeParam, max/4); err != nil {
				return fmt.Errorf("conntrack hashsize: %w", err)
			}
		}
	}
	seconds := []struct {
		name string
		d    time.Duration
	}{
		{"nf_conntrack_tcp_timeout_established", s.TCPEstablishedTimeout},
		{"nf_conntrack_tcp_timeout_close_wait", s.TCPCloseWaitTimeout},
		{"nf_conntrack_udp_timeout", s.UDPTimeout},
		{"nf_conntrack_udp_timeout_stream", s.UDPStreamTimeout},
	}
	for _, t := range seconds {
		if t.d > 0 {
			if err := host.EnsureSysctl(logger, sys, "net/netfilter/"+t.name, int(t.d/time.Second)); err != nil {
				return err
			}
		}
	}
	if s.TCPBeLiberal {
		return host.EnsureSysctl(logger, sys, "net/netfilter/nf_conntrack_tcp_be_liberal", 1)
	}
	return nil
}
