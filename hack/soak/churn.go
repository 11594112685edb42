package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/hack/lab"
)

const managedBy = "soak-churn"

// svcState is what decides a probed Service's answers: its ready
// endpoints (pod names) and its externalTrafficPolicy.
type svcState struct {
	Ready    []string // sorted pod names
	NotReady []string // in the slice, never to answer
	Local    bool     // externalTrafficPolicy: Local
	Affinity bool     // sessionAffinity: ClientIP (does not change what may answer)
}

func (st svcState) key() string {
	return fmt.Sprintf("%s|%v", strings.Join(st.Ready, ","), st.Local)
}

// version is one state of a probed Service in the API: current from From
// (the start of the write that made it) until Until (the end of the write
// that replaced it; zero while current).
type version struct {
	st          svcState
	From, Until time.Time
}

// probeSvc is a Service the prober connects to. Its history of API states
// is what answers are checked against.
type probeSvc struct {
	name      string
	nodePort  bool // type NodePort with fixed node ports 30080/30053
	clusterIP string

	mu       sync.Mutex
	cur      svcState
	versions []version
	// unsettled: the start of the first write whose call failed since the
	// soak last knew the Service's state for sure (zero: it knows). Such a
	// write may still have been applied (a timeout while the API server
	// restarts); see settle.
	unsettled time.Time
}

const (
	nodePortTCP = 30080
	nodePortUDP = 30053
)

// record appends the state a write made current. On success every open
// version is closed at end; on an error the write may or may not have
// happened, so the old versions stay open too.
func (p *probeSvc) record(st svcState, start, end time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		for i := range p.versions {
			if p.versions[i].Until.IsZero() {
				p.versions[i].Until = end
			}
		}
		p.cur = st
	} else if p.unsettled.IsZero() {
		p.unsettled = start
	}
	p.versions = append(p.versions, version{st: st, From: start})
}

// settle reads the Service and its EndpointSlice back after a failed write
// and records what the API holds: had the soak gone on from the state it
// believed, an applied "failed" write (say a policy toggle) would have set
// its history apart from the API's for good, and rules that follow the API
// would have looked stale from then on. The state read may have been
// current since the failed write began; the versions open until now may
// have been too. It returns the read's error, nil when nothing was
// unsettled.
func (s *soak) settle(ctx context.Context, p *probeSvc) error {
	p.mu.Lock()
	since := p.unsettled
	p.mu.Unlock()
	if since.IsZero() {
		return nil
	}
	svc, err := s.cs.CoreV1().Services(ns).Get(ctx, p.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	sl, err := s.cs.DiscoveryV1().EndpointSlices(ns).Get(ctx, p.name+"-x", metav1.GetOptions{})
	if err != nil {
		return err
	}
	st := svcState{
		Local:    p.nodePort && svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
		Affinity: svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP,
	}
	for _, ep := range sl.Endpoints {
		name := s.podByIP[ep.Addresses[0]]
		if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
			st.Ready = append(st.Ready, name)
		} else {
			st.NotReady = append(st.NotReady, name)
		}
	}
	sort.Strings(st.Ready)
	sort.Strings(st.NotReady)
	p.record(st, since, time.Now(), true)
	p.mu.Lock()
	p.unsettled = time.Time{}
	p.mu.Unlock()
	logf("probed service %s settled after a failed write: ready %v, local %v", p.name, st.Ready, st.Local)
	return nil
}

// current returns the versions current at some moment in [a, b].
func (p *probeSvc) during(a, b time.Time) []version {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []version
	for _, v := range p.versions {
		if v.From.After(b) {
			continue
		}
		if !v.Until.IsZero() && v.Until.Before(a) {
			continue
		}
		out = append(out, v)
	}
	return out
}

// stateAt returns the newest version begun by t.
func (p *probeSvc) stateAt(t time.Time) svcState {
	p.mu.Lock()
	defer p.mu.Unlock()
	var st svcState
	for _, v := range p.versions {
		if !v.From.After(t) {
			st = v.st
		}
	}
	return st
}

func (p *probeSvc) state() svcState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

func (p *probeSvc) service(st svcState) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: ns, Labels: map[string]string{"soak": "probe"}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(echoPort)},
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(echoPort)},
			},
		},
	}
	if p.nodePort {
		svc.Spec.Type = corev1.ServiceTypeNodePort
		svc.Spec.Ports[0].NodePort = nodePortTCP
		svc.Spec.Ports[1].NodePort = nodePortUDP
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		if st.Local {
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
	}
	if st.Affinity {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(30))}}
	} else {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	return svc
}

// slice is the EndpointSlice of a Service with ports like svc's, ready and
// not-ready pods by name.
func (s *soak) slice(svc *corev1.Service, sliceName string, ready, notReady []string) *discovery.EndpointSlice {
	byName := map[string]*lab.Pod{}
	for _, p := range s.l.Pods() {
		byName[p.Name] = &p
	}
	var eps []lab.SliceEndpoint
	for _, n := range ready {
		eps = append(eps, lab.SliceEndpoint{Pod: byName[n], Ready: true})
	}
	for _, n := range notReady {
		eps = append(eps, lab.SliceEndpoint{Pod: byName[n], Ready: false})
	}
	return lab.EndpointSliceFor(svc, ns, sliceName, managedBy, eps...)
}

func (s *soak) podNames() []string {
	var out []string
	for _, p := range s.l.Pods() {
		out = append(out, p.Name)
	}
	return out
}

// createProbeServices creates the two probed Services with all pods as
// endpoints.
func (s *soak) createProbeServices(ctx context.Context) error {
	s.probeSvcs = []*probeSvc{{name: "p-web"}, {name: "p-np", nodePort: true}}
	for _, p := range s.probeSvcs {
		st := svcState{Ready: s.podNames()}
		svc := p.service(st)
		start := time.Now()
		if _, err := s.cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, s.slice(svc, p.name+"-x", st.Ready, nil), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("slice of %s: %w", p.name, err)
		}
		created, err := s.cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("service %s: %w", p.name, err)
		}
		p.clusterIP = created.Spec.ClusterIP
		p.record(st, start, time.Now(), true)
		logf("probed service %s/%s: cluster IP %s", ns, p.name, p.clusterIP)
	}
	return nil
}

// churnStats counts the churn driver's writes.
type churnStats struct {
	mu     sync.Mutex
	ops    map[string]int
	failed map[string]int
	last   time.Time // end of the last successful write
	fails  []time.Time
}

func (c *churnStats) count(op string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ops == nil {
		c.ops, c.failed = map[string]int{}, map[string]int{}
	}
	c.ops[op]++
	if err != nil {
		c.failed[op]++
		c.fails = append(c.fails, time.Now())
	} else {
		c.last = time.Now()
	}
}

// ephemeral is a churned Service that is not probed: it exercises types,
// ports, policies, affinity, creation and deletion; the final drift check
// covers it.
type ephemeral struct {
	name   string
	exists bool
}

// runChurn writes to the API every ChurnInterval until ctx ends (at most
// duration/interval + 1 writes).
func (s *soak) runChurn(ctx context.Context, until time.Time) {
	pool := make([]*ephemeral, 8)
	for i := range pool {
		pool[i] = &ephemeral{name: fmt.Sprintf("c-%d", i)}
	}
	tick := time.NewTicker(s.cfg.ChurnInterval)
	defer tick.Stop()
	limit := int(time.Until(until)/s.cfg.ChurnInterval) + 1
	for i := 0; i < limit; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Now().After(until) {
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		r := s.rnd.Intn(100)
		// While the fault injector holds the probed Services still (see
		// markerWrite), their turn goes to the other Services.
		switch probe := r < 50 && s.probeWrites.TryLock(); {
		case probe && r < 40:
			s.churnProbeEndpoints(wctx)
			s.probeWrites.Unlock()
		case probe:
			s.churnProbePolicy(wctx)
			s.probeWrites.Unlock()
		default:
			s.churnEphemeral(wctx, pool[s.rnd.Intn(len(pool))])
		}
		cancel()
	}
}

// subset returns a random subset of names (sorted), empty with
// probability 1/10 when allowEmpty.
func (s *soak) subset(names []string, allowEmpty bool) []string {
	if allowEmpty && s.rnd.Intn(10) == 0 {
		return nil
	}
	var out []string
	for _, n := range names {
		if s.rnd.Intn(2) == 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = []string{names[s.rnd.Intn(len(names))]}
	}
	sort.Strings(out)
	return out
}

func (s *soak) churnProbeEndpoints(ctx context.Context) {
	p := s.probeSvcs[s.rnd.Intn(len(s.probeSvcs))]
	if err := s.settle(ctx, p); err != nil {
		s.churn.count("probe endpoints", err)
		return
	}
	st := p.state()
	all := s.podNames()
	st.Ready = s.subset(all, true)
	st.NotReady = nil
	if s.rnd.Intn(3) == 0 {
		for _, n := range all {
			if !contains(st.Ready, n) {
				st.NotReady = []string{n}
				break
			}
		}
	}
	_, err := s.writeProbeSlice(ctx, p, st)
	s.churn.count("probe endpoints", err)
}

func (s *soak) churnProbePolicy(ctx context.Context) {
	p := s.probeSvcs[s.rnd.Intn(len(s.probeSvcs))]
	if err := s.settle(ctx, p); err != nil {
		s.churn.count("probe policy", err)
		return
	}
	st := p.state()
	if p.nodePort && s.rnd.Intn(2) == 0 {
		st.Local = !st.Local
	} else {
		st.Affinity = !st.Affinity
	}
	_, err := s.writeProbeService(ctx, p, st)
	s.churn.count("probe policy", err)
}

// writeProbeService writes a probed Service's spec for st and records the
// write (even a failed call may have been applied: settle reads it back).
// It returns when the write started.
func (s *soak) writeProbeService(ctx context.Context, p *probeSvc, st svcState) (time.Time, error) {
	start := time.Now()
	err := s.updateService(ctx, p.service(st))
	p.record(st, start, time.Now(), err == nil)
	return start, err
}

// writeProbeSlice is writeProbeService for the probed Service's
// EndpointSlice.
func (s *soak) writeProbeSlice(ctx context.Context, p *probeSvc, st svcState) (time.Time, error) {
	start := time.Now()
	err := s.updateSlice(ctx, p.service(st), p.name+"-x", st.Ready, st.NotReady)
	p.record(st, start, time.Now(), err == nil)
	return start, err
}

func (s *soak) updateSlice(ctx context.Context, svc *corev1.Service, name string, ready, notReady []string) error {
	want := s.slice(svc, name, ready, notReady)
	cur, err := s.cs.DiscoveryV1().EndpointSlices(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = s.cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	want.ResourceVersion = cur.ResourceVersion
	_, err = s.cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, want, metav1.UpdateOptions{})
	return err
}

// updateService replaces the spec fields the soak owns, keeping the
// allocated ones (cluster IP, node ports the soak did not fix).
func (s *soak) updateService(ctx context.Context, want *corev1.Service) error {
	cur, err := s.cs.CoreV1().Services(ns).Get(ctx, want.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	want.ResourceVersion = cur.ResourceVersion
	want.Spec.ClusterIP = cur.Spec.ClusterIP
	want.Spec.ClusterIPs = cur.Spec.ClusterIPs
	want.Spec.IPFamilies = cur.Spec.IPFamilies
	want.Spec.IPFamilyPolicy = cur.Spec.IPFamilyPolicy
	_, err = s.cs.CoreV1().Services(ns).Update(ctx, want, metav1.UpdateOptions{})
	return err
}

// ephemeralService is a random Service: ClusterIP or NodePort, one to three
// ports of TCP and UDP, random traffic policies and affinity.
func (s *soak) ephemeralService(name string) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"soak": "churn"}}}
	nports := 1 + s.rnd.Intn(3)
	base := int32(1000 + s.rnd.Intn(2000))
	for i := 0; i < nports; i++ {
		proto := corev1.ProtocolTCP
		if s.rnd.Intn(2) == 0 {
			proto = corev1.ProtocolUDP
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: fmt.Sprintf("p%d", i), Protocol: proto, Port: base + int32(i), TargetPort: intstr.FromInt32(echoPort),
		})
	}
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	if s.rnd.Intn(2) == 0 {
		svc.Spec.Type = corev1.ServiceTypeNodePort
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		if s.rnd.Intn(2) == 0 {
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
	}
	itp := corev1.ServiceInternalTrafficPolicyCluster
	if s.rnd.Intn(3) == 0 {
		itp = corev1.ServiceInternalTrafficPolicyLocal
	}
	svc.Spec.InternalTrafficPolicy = &itp
	svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
	if s.rnd.Intn(3) == 0 {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(60 + s.rnd.Intn(100)))}}
	}
	return svc
}

func (s *soak) churnEphemeral(ctx context.Context, e *ephemeral) {
	sliceName := e.name + "-x"
	if !e.exists {
		svc := s.ephemeralService(e.name)
		err := s.updateSliceFresh(ctx, svc, sliceName, s.subset(s.podNames(), true))
		if err == nil {
			_, err = s.cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
		}
		e.exists = err == nil || apierrors.IsAlreadyExists(err)
		s.churn.count("create", err)
		return
	}
	switch r := s.rnd.Intn(6); r {
	case 0, 1: // endpoints
		cur, err := s.cs.CoreV1().Services(ns).Get(ctx, e.name, metav1.GetOptions{})
		if err == nil {
			err = s.updateSlice(ctx, cur, sliceName, s.subset(s.podNames(), true), nil)
		}
		s.churn.count("endpoints", err)
	case 2, 3, 4: // ports, type, policies, affinity: a new random spec
		want := s.ephemeralService(e.name)
		err := s.updateService(ctx, want)
		if err == nil {
			// The slice follows the Service's ports, as the controller's would.
			var cur *discovery.EndpointSlice
			cur, err = s.cs.DiscoveryV1().EndpointSlices(ns).Get(ctx, sliceName, metav1.GetOptions{})
			if err == nil {
				var ready []string
				for _, ep := range cur.Endpoints {
					if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
						ready = append(ready, s.podByIP[ep.Addresses[0]])
					}
				}
				err = s.updateSlice(ctx, want, sliceName, ready, nil)
			}
		}
		op := map[int]string{2: "ports/type", 3: "policies", 4: "affinity"}[r]
		s.churn.count(op, err)
	case 5: // delete
		err := s.cs.CoreV1().Services(ns).Delete(ctx, e.name, metav1.DeleteOptions{})
		if err == nil || apierrors.IsNotFound(err) {
			err2 := s.cs.DiscoveryV1().EndpointSlices(ns).Delete(ctx, sliceName, metav1.DeleteOptions{})
			if err2 != nil && !apierrors.IsNotFound(err2) {
				err = err2
			} else {
				err = nil
				e.exists = false
			}
		}
		s.churn.count("delete", err)
	}
}

// updateSliceFresh creates or replaces the slice for a new Service.
func (s *soak) updateSliceFresh(ctx context.Context, svc *corev1.Service, name string, ready []string) error {
	return s.updateSlice(ctx, svc, name, ready, nil)
}

func contains(list []string, x string) bool {
	for _, v := range list {
		if v == x {
			return true
		}
	}
	return false
}

// markerWrite proves a node's informers are back after an API server
// restart: client-go's Service and EndpointSlice watches come back each on
// its own backoff, up to 30 s apart (50 s seen), so it writes to both. It
// toggles the NodePort probe Service's externalTrafficPolicy (a Service
// write), then gives its EndpointSlice another non-empty set of ready pods;
// only a node whose two watches are back shows the second write's state
// (new pods, new policy, which the rules show only while there are
// endpoints). Until release is called, no probed Service is written
// again: a later write could take the policy back to what a node whose
// Service watch is not back still shows, and such a node would look
// converged (a 30-minute run saw a node show a 74 s old policy after that).
// The policy it leaves is the opposite of the one the API held when the
// fault began (since), whatever was written meanwhile: a node whose Service
// watch is not back still shows that one. A toggle of the API's current
// policy is not enough: a churn write that failed during the restart may
// have been applied (settle learns it), and toggling it back would match
// the stale node (a 30-minute run: node2 "converged" 0.28 s after R, then
// showed a 6 s stale policy, which matched a 390 s old version).
// It returns the start of the slice write and release, or the zero time
// and nil when there is no such Service or the writes did not get through
// (at most 10 tries, 2 s apart, while the API server settles).
func (s *soak) markerWrite(ctx context.Context, since time.Time) (time.Time, func()) {
	var p *probeSvc
	for _, c := range s.probeSvcs {
		if c.nodePort {
			p = c
		}
	}
	if p == nil {
		return time.Time{}, nil
	}
	target := !p.stateAt(since).Local
	s.probeWrites.Lock()
	var policies []bool // still to write; nil: not planned yet
	for range 10 {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.settle(wctx, p)
		if err == nil && policies == nil {
			policies = markerPolicies(p.state().Local, target)
		}
		for err == nil && len(policies) > 0 {
			st := p.state()
			st.Local = policies[0]
			if _, err = s.writeProbeService(wctx, p, st); err == nil {
				policies = policies[1:]
			}
		}
		if err == nil {
			st := p.state()
			st.Ready, st.NotReady = markerReady(st.Ready, s.podNames()), nil
			var start time.Time
			if start, err = s.writeProbeSlice(wctx, p, st); err == nil {
				cancel()
				var once sync.Once
				return start, func() { once.Do(s.probeWrites.Unlock) }
			}
		}
		cancel()
		if ctx.Err() != nil {
			break
		}
		sleep(ctx, 2*time.Second)
	}
	s.probeWrites.Unlock()
	return time.Time{}, nil
}

// markerPolicies are the externalTrafficPolicy Local values the marker
// writes, in order, when the API holds current: at least one write, the
// last one target.
func markerPolicies(current, target bool) []bool {
	if current != target {
		return []bool{target}
	}
	return []bool{!target, target}
}

// markerReady is a non-empty set of ready pods other than cur.
func markerReady(cur, all []string) []string {
	if len(cur) > 1 {
		return cur[1:]
	}
	out := slices.Clone(all)
	sort.Strings(out)
	return out
}
