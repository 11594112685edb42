package main

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// A write whose call failed but which the API applied (a timeout while the
// API server restarts) must not leave the soak believing the old state:
// rules that follow the API would then look stale for as long as the
// Service is not written again (a 30-minute run flagged such a read as
// "rules 479.9 s stale").
func TestSettleLearnsWhatAFailedWriteLeft(t *testing.T) {
	np := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "p-np", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeNodePort,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal, // the "failed" toggle, applied
			SessionAffinity:       corev1.ServiceAffinityNone,
		},
	}
	slice := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "p-np-x", Namespace: ns},
		Endpoints: []discovery.Endpoint{
			{Addresses: []string{"198.51.100.3"}, Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"198.51.100.2"}, Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"198.51.100.4"}, Conditions: discovery.EndpointConditions{Ready: ptr.To(false)}},
		},
	}
	s := &soak{
		cs:      fake.NewClientset(np, slice),
		podByIP: map[string]string{"198.51.100.2": "n1-p1", "198.51.100.3": "n1-p2", "198.51.100.4": "n1-p3"},
	}
	p := &probeSvc{name: "p-np", nodePort: true}
	t0 := time.Now().Add(-time.Minute) // the writes happened a minute ago; settle runs now
	believed := svcState{Ready: []string{"n1-p1", "n1-p2"}}
	p.record(believed, t0, t0.Add(time.Millisecond), true)
	toggle := believed
	toggle.Local = true
	failedAt := t0.Add(time.Second)
	p.record(toggle, failedAt, failedAt.Add(10*time.Second), false)
	if p.state().Local {
		t.Fatalf("a failed write changed what the soak believes: %+v", p.state())
	}

	if err := s.settle(context.Background(), p); err != nil {
		t.Fatalf("settle: %v", err)
	}
	got := p.state()
	if !got.Local || !slices.Equal(got.Ready, []string{"n1-p1", "n1-p2"}) || !slices.Equal(got.NotReady, []string{"n1-p3"}) {
		t.Fatalf("after settle the soak believes %+v; the API holds ready [n1-p1 n1-p2], not ready [n1-p3], Local", got)
	}
	// A read of rules that follow the API is fresh, long after.
	later := time.Now().Add(time.Minute)
	sn := snapshot{t: later, end: later, jumps: true, states: map[string]programmed{
		"p-np": {HTTP: []string{"n1-p1", "n1-p2"}, DNS: []string{"n1-p1", "n1-p2"}, Local: true},
	}}
	if u, ok := p.shownUntil(sn); !ok || !u.Equal(later) {
		t.Errorf("rules equal to the API's state shown until %v (found %v), want the read's own time %v", u, ok, later)
	}
	// The version the soak believed may have been current until settle:
	// a read showing it in between is not stale either.
	between := failedAt.Add(5 * time.Second)
	old := snapshot{t: between, end: between, jumps: true, states: map[string]programmed{
		"p-np": {HTTP: []string{"n1-p1", "n1-p2"}, DNS: []string{"n1-p1", "n1-p2"}},
	}}
	if u, ok := p.shownUntil(old); !ok || !u.Equal(between) {
		t.Errorf("the believed state read before settle shown until %v (found %v), want %v", u, ok, between)
	}

	// Settled: nothing more to read, and no read is made.
	s.cs = fake.NewClientset()
	if err := s.settle(context.Background(), p); err != nil {
		t.Errorf("settle with nothing unsettled read the API: %v", err)
	}
}

// While the API cannot answer, settle says so and stays unsettled.
func TestSettleKeepsUnsettledWhileTheAPIFails(t *testing.T) {
	s := &soak{cs: fake.NewClientset()}
	p := &probeSvc{name: "p-web"}
	now := time.Now()
	p.record(svcState{Ready: []string{"a"}}, now, now, false)
	if err := s.settle(context.Background(), p); err == nil {
		t.Fatal("settle of a Service the API does not have: no error")
	}
	if p.unsettled.IsZero() {
		t.Error("a failed settle cleared the unsettled mark")
	}
}

func TestMarkerReadyDiffersAndIsNotEmpty(t *testing.T) {
	all := []string{"n2-p1", "n1-p1", "n1-p2"}
	for _, cur := range [][]string{nil, {"n1-p1"}, {"n1-p1", "n1-p2"}, {"n1-p1", "n1-p2", "n2-p1"}} {
		got := markerReady(cur, all)
		if len(got) == 0 || slices.Equal(got, cur) || !slices.IsSorted(got) {
			t.Errorf("markerReady(%v) = %v: want a sorted, non-empty set other than the current one", cur, got)
		}
	}
}

// The marker's Service writes end on the policy opposite to the one the API
// held when the fault began — what a node whose Service watch is not back
// still shows — whatever a failed-but-applied write left in the API, and
// at least one write is made after the restart.
func TestMarkerPoliciesNeverEndOnTheStaleValue(t *testing.T) {
	for _, atFaultStart := range []bool{false, true} {
		for _, current := range []bool{false, true} {
			target := !atFaultStart
			got := markerPolicies(current, target)
			if len(got) == 0 {
				t.Fatalf("fault start %v, API now %v: no write", atFaultStart, current)
			}
			if last := got[len(got)-1]; last == atFaultStart {
				t.Errorf("fault start %v, API now %v: writes %v end on the stale value", atFaultStart, current, got)
			}
			if got[0] == current {
				t.Errorf("fault start %v, API now %v: writes %v begin with no change", atFaultStart, current, got)
			}
		}
	}
}
