package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// httpGet GETs url with a socket inside namespace nsName.
func httpGet(nsName, url string) (code int, body string, err error) {
	code, _, body, err = lab.HTTPGet(nsName, url)
	return code, body, err
}

// httpGetHeader is httpGet that also returns the Content-Type.
func httpGetHeader(nsName, url string) (code int, contentType, body string, err error) {
	return lab.HTTPGet(nsName, url)
}

// ---- Kubernetes objects ----------------------------------------------------

// svcSpec describes a test Service: a TCP port "http" 80 -> echoPort, plus
// optionally a UDP port "dns" 53 -> echoPort, NodePort if nodePort != 0.
type svcSpec struct {
	name     string
	udp      bool
	nodePort int32
	local    bool // externalTrafficPolicy: Local (NodePort only)
	labels   map[string]string
	affinity int32 // sessionAffinity ClientIP with this timeout, if > 0
	// families is spec.ipFamilies (nil: the API server's primary family,
	// IPv4); more than one makes the Service RequireDualStack, one
	// SingleStack.
	families []corev1.IPFamily
}

func (s svcSpec) service() *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: ns, Labels: s.labels},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{
				Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(echoPort),
			}},
		},
	}
	if s.nodePort != 0 {
		svc.Spec.Type = corev1.ServiceTypeNodePort
		svc.Spec.Ports[0].NodePort = s.nodePort
		if s.local {
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
	}
	if s.affinity > 0 {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(s.affinity)}}
	}
	if s.udp {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(echoPort),
		})
	}
	if len(s.families) > 0 {
		svc.Spec.IPFamilies = s.families
		policy := corev1.IPFamilyPolicySingleStack
		if len(s.families) > 1 {
			policy = corev1.IPFamilyPolicyRequireDualStack
		}
		svc.Spec.IPFamilyPolicy = &policy
	}
	return svc
}

// serviceFamilies are the IP families of svc's EndpointSlices: its
// ipFamilies, or IPv4 (the lab API server's primary family) when unset.
func serviceFamilies(svc *corev1.Service) []lab.Family {
	var out []lab.Family
	for _, f := range svc.Spec.IPFamilies {
		out = append(out, labFamily(f))
	}
	if len(out) == 0 {
		out = []lab.Family{lab.IPv4}
	}
	return out
}

func labFamily(f corev1.IPFamily) lab.Family {
	if f == corev1.IPv6Protocol {
		return lab.IPv6
	}
	return lab.IPv4
}

// createService creates the Service (deleted with its slices when t ends)
// and returns it with its allocated cluster IP. With pods, its
// EndpointSlice is created first, so that the Service never exists without
// endpoints (which would REJECT, and use up the node's ICMP rate limit
// towards the client).
func (e *env) createService(t *testing.T, s svcSpec, pods ...*lab.Pod) *corev1.Service {
	t.Helper()
	t.Cleanup(func() { e.deleteService(t, s.name) })
	if len(pods) > 0 {
		e.setEndpoints(t, s.service(), pods...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := e.cs.CoreV1().Services(ns).Create(ctx, s.service(), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", s.name, err)
	}
	if len(svc.Spec.ClusterIPs) > 1 {
		t.Logf("service %s/%s: cluster IPs %v", ns, s.name, svc.Spec.ClusterIPs)
	} else {
		t.Logf("service %s/%s: cluster IP %s", ns, s.name, svc.Spec.ClusterIP)
	}
	return svc
}

// deleteService deletes the Service and its EndpointSlices (idempotent).
func (e *env) deleteService(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.cs.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete service %s: %v", name, err)
	}
	err := e.cs.DiscoveryV1().EndpointSlices(ns).DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: discovery.LabelServiceName + "=" + name})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete endpoint slices of %s: %v", name, err)
	}
}

// endpoint is one slice entry: a pod, ready or not (not ready = neither
// ready nor serving, not terminating: a pod failing its readiness probe).
type endpoint struct {
	pod   *lab.Pod
	ready bool
}

// setEndpoints sets the Service's endpoints to pods, all ready.
func (e *env) setEndpoints(t *testing.T, svc *corev1.Service, pods ...*lab.Pod) {
	t.Helper()
	var eps []endpoint
	for _, p := range pods {
		eps = append(eps, endpoint{p, true})
	}
	e.setSlice(t, svc, eps...)
}

// setSlice creates or replaces the Service's EndpointSlices, one per IP
// family of the Service (as the EndpointSlice controller would: an address
// type per slice, service-name label, the Service's other labels, one port
// per Service port, endpoints with their node).
func (e *env) setSlice(t *testing.T, svc *corev1.Service, eps ...endpoint) {
	t.Helper()
	var sliceEPs []lab.SliceEndpoint
	var desc []string
	for _, ep := range eps {
		sliceEPs = append(sliceEPs, lab.SliceEndpoint{Pod: ep.pod, Ready: ep.ready})
		d := ep.pod.Name
		if !ep.ready {
			d += "(not ready)"
		}
		desc = append(desc, d)
	}
	families := serviceFamilies(svc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api := e.cs.DiscoveryV1().EndpointSlices(ns)
	for _, family := range families {
		name := svc.Name + "-e2e" // the IPv4 slice keeps its historical name
		if family == lab.IPv6 {
			name += "-v6"
		}
		slice := lab.EndpointSliceForFamily(svc, ns, name, "svpe2-test", family, sliceEPs...)
		cur, err := api.Get(ctx, slice.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = api.Create(ctx, slice, metav1.CreateOptions{})
		case err == nil:
			slice.ResourceVersion = cur.ResourceVersion
			_, err = api.Update(ctx, slice, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Fatalf("%s endpoint slice for %s: %v", family, svc.Name, err)
		}
	}
	t.Logf("endpoints of %s (%v): %v", svc.Name, families, desc)
}

func podNames(pods []*lab.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

// ---- traffic ---------------------------------------------------------------

// target is where a probe goes.
type target struct {
	from  string // namespace
	proto string
	addr  string
	port  int
}

func (g target) String() string {
	return fmt.Sprintf("%s %s from %s", g.proto, net.JoinHostPort(g.addr, itoa(g.port)), g.from)
}

func (g target) spec(timeout time.Duration) lab.ProbeSpec {
	return lab.ProbeSpec{NS: g.from, Proto: g.proto, Addr: g.addr, Port: g.port, Timeout: timeout}
}

func (g target) probe(timeout time.Duration) (lab.ProbeResult, error) {
	return lab.ProbeWith(g.spec(timeout))
}

// reachAll probes g until every backend in want has answered (bounded by
// converge and 1000 requests). Failed probes are tolerated while the rules
// converge; an answer from a backend outside want fails the test at once.
// It returns the client IPs the backends saw.
func reachAll(t *testing.T, g target, want ...string) map[string]bool {
	t.Helper()
	return reachAllWithin(t, converge, g, want...)
}

// reachAllWithin is reachAll with another time limit.
func reachAllWithin(t *testing.T, limit time.Duration, g target, want ...string) map[string]bool {
	t.Helper()
	clients := map[string]bool{}
	for _, seen := range reachAllByBackend(t, limit, g, want...) {
		maps.Copy(clients, seen)
	}
	return clients
}

// reachAllByBackend is reachAllWithin that returns the client IPs each
// backend saw (for checks such as: the node's own endpoint sees the
// masquerade address of the pod bridge, a remote one the node's address).
func reachAllByBackend(t *testing.T, limit time.Duration, g target, want ...string) map[string]map[string]bool {
	t.Helper()
	start := time.Now()
	seen := map[string]map[string]bool{}
	clients := map[string]bool{}
	var lastErr error
	deadline := start.Add(limit)
	for i := 0; i < 1000 && time.Now().Before(deadline); i++ {
		// Short: a SYN sent before the rules exist is not DNATed, and
		// neither are its retransmits (same conntrack entry).
		r, err := g.probe(500 * time.Millisecond)
		if err != nil {
			lastErr = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !slices.Contains(want, r.Backend) {
			t.Fatalf("%s: answered by %q, want only %v", g, r.Backend, want)
		}
		if seen[r.Backend] == nil {
			seen[r.Backend] = map[string]bool{}
		}
		seen[r.Backend][r.ClientIP()] = true
		clients[r.ClientIP()] = true
		if len(seen) == len(want) {
			t.Logf("%s: all of %v answered after %d requests, %s (client seen as %v)", g, want, i+1, time.Since(start).Round(time.Millisecond), keys(clients))
			return seen
		}
	}
	t.Fatalf("%s: only %v of %v answered within %s (last error: %v)", g, keys(seen), want, limit, lastErr)
	return nil
}

// hits sends n requests, each of which must be answered, and counts the
// answers by backend.
func hits(t *testing.T, g target, n int) (byBackend map[string]int, clients map[string]bool) {
	t.Helper()
	byBackend, clients, err := lab.Hits(g.spec(2*time.Second), n)
	if err != nil {
		t.Fatalf("%s: %v", g, err)
	}
	return byBackend, clients
}

// unanswered checks that g gets no answer from any backend; it returns the
// probe error.
func unanswered(t *testing.T, g target, timeout time.Duration) error {
	t.Helper()
	r, err := g.probe(timeout)
	if err == nil {
		t.Fatalf("%s: answered by %s, want no answer", g, r.Backend)
	}
	return err
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---- rules -----------------------------------------------------------------

var (
	svcChainRE  = lab.ServiceChainRE
	dnatDestRE  = regexp.MustCompile(`--to-destination (\S+)`)
	ruleChainRE = regexp.MustCompile(`^-A (\S+) `)
)

// svcKey is how rule comments name a Service ("e2e/name:" + port name).
func svcKey(name string) string { return ns + "/" + name + ":" }

// serviceChains returns the per-service chains (KUBE-SVC/SVL/SEP/EXT/FW) of
// Service name in iptables-save text: chains named or jumped to by the
// rules whose comment names the Service.
func serviceChains(save, name string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(save, "\n") {
		if strings.Contains(line, svcKey(name)) {
			for _, c := range svcChainRE.FindAllString(line, -1) {
				out[c] = true
			}
		}
	}
	return out
}

// dnatTargets returns the DNAT destinations programmed for Service name.
func dnatTargets(save, name string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(save, "\n") {
		if !strings.Contains(line, svcKey(name)) {
			continue
		}
		if m := dnatDestRE.FindStringSubmatch(line); m != nil {
			out[m[1]] = true
		}
	}
	return out
}

// orphanChains returns the per-service chains (KUBE-SVC/SVL/SEP/EXT/FW)
// declared in save that no rule jumps to: stale chains a sync should have
// deleted.
func orphanChains(save string) []string { return lab.OrphanChains(save) }

// linesMentioning returns the lines of save containing any of words.
func linesMentioning(save string, words ...string) []string {
	var out []string
	for _, line := range strings.Split(save, "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

// chainRules returns the rules ("-A chain ...") of chain.
func chainRules(save, chain string) []string {
	var out []string
	for _, line := range strings.Split(save, "\n") {
		if m := ruleChainRE.FindStringSubmatch(line); m != nil && m[1] == chain {
			out = append(out, line)
		}
	}
	return out
}

// waitRules polls both nodes' nat tables until check passes for each.
func (e *env) waitRules(t *testing.T, what string, check func(nat string) error) {
	t.Helper()
	e.waitTable(t, "nat", what, check)
}

// waitTable polls both nodes' table until check passes for each.
func (e *env) waitTable(t *testing.T, table, what string, check func(save string) error) {
	t.Helper()
	e.waitFamilyTable(t, lab.IPv4, table, what, check)
}

// waitFamilyTable is waitTable for family's table (ip6tables for IPv6).
func (e *env) waitFamilyTable(t *testing.T, family lab.Family, table, what string, check func(save string) error) {
	t.Helper()
	for _, n := range e.lab.Nodes {
		e.waitNodeFamilyTable(t, family, &n, table, what, check)
	}
}

// waitNodeTable polls node n's table until check passes (bounded by converge).
func (e *env) waitNodeTable(t *testing.T, n *lab.Node, table, what string, check func(save string) error) {
	t.Helper()
	e.waitNodeFamilyTable(t, lab.IPv4, n, table, what, check)
}

// waitNodeFamilyTable is waitNodeTable for family's table.
func (e *env) waitNodeFamilyTable(t *testing.T, family lab.Family, n *lab.Node, table, what string, check func(save string) error) {
	t.Helper()
	err := lab.Poll(context.Background(), converge, 100*time.Millisecond, func() error {
		save, err := e.saveFamily(family, n.NS, table)
		if err != nil {
			return err
		}
		return check(save)
	})
	if err != nil {
		t.Fatalf("%s on %s (%s): %v", what, n.Name, family, err)
	}
}

// quietSave returns `iptables-save -t table` of node n once svcproxy's rules
// are at rest: no stale chain waiting to be deleted and two saves, more
// than a minimum sync period apart, with the same KUBE- lines. It fails t
// only when the rules never settle within a minute.
func (e *env) quietSave(t *testing.T, n *lab.Node, table string) string {
	t.Helper()
	var quiet string
	err := lab.Poll(context.Background(), time.Minute, 3*minSyncPeriod, func() error {
		m, err := lab.ScrapeMetrics(context.Background(), n.NS, lab.MetricsURL)
		if err != nil {
			return err
		}
		if pending := m.Flat(lab.IPv4)["svcproxy_stale_chains_pending"]; pending > 0 {
			return fmt.Errorf("%v stale chains pending", pending)
		}
		first, err := e.save(n.NS, table)
		if err != nil {
			return err
		}
		time.Sleep(3 * minSyncPeriod)
		second, err := e.save(n.NS, table)
		if err != nil {
			return err
		}
		if lost, added := lineDiff(kubeLines(first), kubeLines(second)); len(lost)+len(added) > 0 {
			return fmt.Errorf("rules still changing: %d lines went, %d came", len(lost), len(added))
		}
		quiet = second
		return nil
	})
	if err != nil {
		t.Fatalf("%s %s table never at rest: %v", n.Name, table, err)
	}
	return quiet
}

// kubeLines returns the chain declarations and rules of save that mention
// a KUBE- chain.
func kubeLines(save string) []string {
	var out []string
	for _, line := range linesMentioning(save, "KUBE-") {
		if strings.HasPrefix(line, "-A ") || strings.HasPrefix(line, ":KUBE-") {
			out = append(out, line)
		}
	}
	return out
}

// lineDiff returns the lines of before missing from after, and those of
// after missing from before.
func lineDiff(before, after []string) (lost, added []string) {
	in := func(lines []string) map[string]bool {
		m := map[string]bool{}
		for _, l := range lines {
			m[l] = true
		}
		return m
	}
	b, a := in(before), in(after)
	for _, l := range before {
		if !a[l] {
			lost = append(lost, l)
		}
	}
	for _, l := range after {
		if !b[l] {
			added = append(added, l)
		}
	}
	return lost, added
}
