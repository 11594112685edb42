package nodeconfig

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/ipset"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/host"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// How the daemon chooses its IP families, as kube-proxy v1.36 does in
// iptables mode: it runs dual-stack whenever both iptables families work on
// the node, whether or not the cluster actually is dual-stack (a family
// without Services costs only its base chains). When only one works, it
// runs single-stack in the primary family, and refuses to start if that is
// the one that does not work.

// AllFamilies lists IP families in the order the daemon starts them.
var AllFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}

// IPTablesFamily maps an API IP family to the iptables one.
func IPTablesFamily(family v1.IPFamily) iptables.Family {
	if family == v1.IPv6Protocol {
		return iptables.IPv6
	}
	return iptables.IPv4
}

// IPSetFamily maps an API IP family to the ipset one.
func IPSetFamily(family v1.IPFamily) ipset.Family {
	if family == v1.IPv6Protocol {
		return ipset.IPv6
	}
	return ipset.IPv4
}

// OpenIPTablesFunc opens one family's iptables with a backend.
type OpenIPTablesFunc func(ctx context.Context, family v1.IPFamily, backend iptables.Backend) (iptables.Interface, error)

// OpenIPTables returns family's iptables if it can be used in this network
// namespace: New succeeds (the binaries exist and answer --version) and the
// kernel has the family's nat table, asked as "iptables -t nat -S
// POSTROUTING 1": one built-in chain, so the answer costs the same on an
// empty node and on one holding 100,000 chains.
func OpenIPTables(ex iptables.Executor) OpenIPTablesFunc {
	return func(ctx context.Context, family v1.IPFamily, backend iptables.Backend) (iptables.Interface, error) {
		ipt, err := iptables.New(ex, iptables.Options{Family: IPTablesFamily(family), Backend: backend})
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ok, err := ipt.ChainExists(ctx, iptables.TableNAT, "POSTROUTING")
		switch {
		case err != nil:
			return nil, fmt.Errorf("reading the %s nat table: %w", family, err)
		case !ok:
			return nil, fmt.Errorf("the %s nat table has no POSTROUTING chain", family)
		}
		return ipt, nil
	}
}

// Plan is what the daemon runs: the IP families, their iptables, and this
// node's Node as seen at startup (nil if unknown).
type Plan struct {
	Families []v1.IPFamily
	IPTables map[v1.IPFamily]iptables.Interface
	Node     *v1.Node
}

// PlanFamilies finds the usable families and the primary one (from
// bindAddress, else from the Node's addresses, waiting for them as
// kube-proxy does) and chooses what to run. getNode fetches this node's
// Node object. It returns ctx's error if ctx ends while waiting.
func PlanFamilies(ctx context.Context, backend iptables.Backend, bindAddress, nodeName string, getNode func(ctx context.Context) (*v1.Node, error)) (*Plan, error) {
	ipts, unusable := FamilyDetector{Open: OpenIPTables(iptables.OSExecutor{}), KernelIPv6: host.KernelIPv6}.Detect(ctx, backend)
	var node *v1.Node
	if _, ok := bindIP(bindAddress); !ok {
		node = waitForNodeAddresses(ctx, nodeName, getNode, nodeWaitTimeout, nodeWaitInterval)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	families, err := chooseFamilies(primaryFamily(bindAddress, node), ipts, unusable)
	if err != nil {
		return nil, err
	}
	return &Plan{Families: families, IPTables: ipts, Node: node}, nil
}

// FamilyDetector finds which IP families the node can proxy.
type FamilyDetector struct {
	Open OpenIPTablesFunc
	// KernelIPv6, when set, reports why the kernel cannot do IPv6 (nil if
	// it can). The daemon checks it; cleanup does not (rules may be left
	// over from before IPv6 was turned off).
	KernelIPv6 func() error
}

// Detect opens iptables for each family. IPv4 goes first, and its backend
// (after auto-detection) is used for IPv6 too: both families of a node must
// agree, and auto-detection already looks at both. It returns the usable
// families' iptables, and why each other family is not usable.
func (d FamilyDetector) Detect(ctx context.Context, backend iptables.Backend) (map[v1.IPFamily]iptables.Interface, map[v1.IPFamily]error) {
	ipts := map[v1.IPFamily]iptables.Interface{}
	errs := map[v1.IPFamily]error{}
	b := backend
	for _, family := range AllFamilies {
		if family == v1.IPv6Protocol && d.KernelIPv6 != nil {
			if err := d.KernelIPv6(); err != nil {
				errs[family] = err
				continue
			}
		}
		ipt, err := d.Open(ctx, family, b)
		if err != nil {
			errs[family] = err
			continue
		}
		ipts[family] = ipt
		if b == iptables.BackendAuto || b == "" {
			b = ipt.Backend()
		}
	}
	return ipts, errs
}

// chooseFamilies decides which families to run, given the primary family
// and the usable ones (see the comment at the top of this file). It logs
// the decision, and once why a family is left out.
func chooseFamilies(primary v1.IPFamily, ipts map[v1.IPFamily]iptables.Interface, errs map[v1.IPFamily]error) ([]v1.IPFamily, error) {
	var usable []v1.IPFamily
	for _, family := range AllFamilies {
		if ipts[family] != nil {
			usable = append(usable, family)
		}
	}
	switch {
	case len(usable) == 0:
		return nil, fmt.Errorf("iptables is not available on this host: %w", errs[v1.IPv4Protocol])
	case ipts[primary] == nil:
		return nil, fmt.Errorf("no support for primary IP family %q: %w", primary, errs[primary])
	case len(usable) == len(AllFamilies):
		klog.InfoS("svcproxy running in dual-stack mode", "primary ipFamily", primary)
		return usable, nil
	}
	for _, family := range AllFamilies {
		if err := errs[family]; err != nil {
			klog.InfoS("No iptables support for family", "ipFamily", family, "error", err)
		}
	}
	klog.InfoS("svcproxy running in single-stack mode", "ipFamily", primary)
	return []v1.IPFamily{primary}, nil
}

// primaryFamily is the family a single-stack node runs, as kube-proxy
// chooses it: a specific --bind-address decides; else the Node's first
// address (InternalIPs first, then ExternalIPs); else IPv4.
func primaryFamily(bindAddress string, node *v1.Node) v1.IPFamily {
	if ip, ok := bindIP(bindAddress); ok {
		return model.FamilyOf(ip)
	}
	if node != nil {
		if ips := model.NodeAddresses(node); len(ips) > 0 {
			return model.FamilyOf(ips[0])
		}
	}
	return v1.IPv4Protocol
}

// bindIP returns --bind-address when it names a specific address (not
// 0.0.0.0 or ::).
func bindIP(bindAddress string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(bindAddress)
	if err != nil || ip.IsUnspecified() {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// nodeWait bounds how long the daemon waits for its Node to have addresses,
// as kube-proxy's (30s, polled every second).
const (
	nodeWaitTimeout  = 30 * time.Second
	nodeWaitInterval = time.Second
)

// waitForNodeAddresses fetches this node's Node object, polling until it has
// addresses or the timeout passes, as kube-proxy does at startup to learn
// the primary family. It returns the last Node seen (nil if none); failure
// is logged, never fatal: the informers deliver the Node later anyway.
func waitForNodeAddresses(ctx context.Context, nodeName string, get func(ctx context.Context) (*v1.Node, error), timeout, interval time.Duration) *v1.Node {
	var node *v1.Node
	var lastErr error
	_ = wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		n, err := get(ctx)
		if err != nil {
			lastErr = err
			return false, nil
		}
		node = n
		return len(model.NodeAddresses(n)) > 0, nil
	})
	switch {
	case ctx.Err() != nil:
	case node == nil:
		klog.ErrorS(lastErr, "Timed out waiting for node to exist; assuming IPv4 is its primary family", "node", nodeName)
	case len(model.NodeAddresses(node)) == 0:
		klog.ErrorS(nil, "Timed out waiting for node to be assigned IPs; assuming IPv4 is its primary family", "node", nodeName)
	default:
		klog.InfoS("Successfully retrieved NodeIPs", "NodeIPs", model.NodeAddresses(node))
	}
	return node
}

// HealthCheckAddrs is where a family's service health checks listen: the
// family's nodePortAddresses, or all of its addresses.
func HealthCheckAddrs(nc *rules.NodeConfig) []netip.Addr {
	if len(nc.NodePortAddresses) > 0 {
		return nc.NodePortAddresses
	}
	if nc.Family == v1.IPv6Protocol {
		return []netip.Addr{netip.IPv6Unspecified()}
	}
	return []netip.Addr{netip.IPv4Unspecified()}
}
