package dataplane

import (
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcproxy/svcproxy/hack/lab"
	"github.com/svcproxy/svcproxy/proxier/conntrack"
	"github.com/svcproxy/svcproxy/proxier/model"
)

// A UDP client that keeps its source port keeps its conntrack entry, and so
// keeps reaching an endpoint that was removed from the service. Deleting the
// stale entries (as the daemon does after a sync) moves it to a live one.
func TestStaleUDPFlowIsMovedToALiveEndpoint(t *testing.T) {
	e := setup(t)
	client := e.lab.Pod(1, 1)
	probe := func() string {
		t.Helper()
		r, err := lab.ProbeWith(lab.ProbeSpec{NS: client.NS, Proto: "udp", Addr: dnsIP, Port: 53, SourcePort: 40053, Timeout: 3 * time.Second})
		if err != nil {
			t.Fatalf("udp probe from %s:40053: %v", client.IP, err)
		}
		return r.Backend
	}
	first := probe()
	for i := 0; i < 5; i++ {
		if got := probe(); got != first {
			t.Fatalf("same source port answered by %s then %s; conntrack should pin the flow", first, got)
		}
	}

	// Remove the endpoint that answered; its echo server keeps running, so
	// a stale flow would keep being answered by it.
	removed := map[string]string{"dns-a": "198.51.100.5", "dns-b": "198.51.100.68"}[first]
	slicesNow := slices.Clone(e.objs.EndpointSlices)
	for i, s := range slicesNow {
		if s.Name == "dns-4fq9z" {
			scaled := s.DeepCopy()
			scaled.Endpoints = slices.DeleteFunc(scaled.Endpoints, func(ep discovery.Endpoint) bool { return ep.Addresses[0] == removed })
			slicesNow[i] = scaled
		}
	}
	e.sync(1, e.objs.Services, slicesNow, map[types.NamespacedName]bool{{Namespace: "kube-system", Name: "dns"}: true})
	if got := probe(); got != first {
		t.Fatalf("without conntrack cleanup the flow should still reach %s (the problem this fixes), got %s", first, got)
	}

	snap, err := model.BuildSnapshot(e.objs.Services, slicesNow, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	var deleted int
	err = lab.InNetns(e.lab.Node(1).NS, func() error {
		ct := conntrack.Netlink{Family: v1.IPv4Protocol}
		flows, err := ct.ListUDP()
		if err != nil {
			return err
		}
		deleted, err = ct.Delete(model.StaleUDPFlows(snap, flows))
		return err
	})
	if err != nil {
		t.Fatalf("conntrack cleanup in %s: %v", e.lab.Node(1).NS, err)
	}
	if deleted < 1 {
		t.Fatalf("deleted %d conntrack entries, want the stale flow", deleted)
	}
	for i := 0; i < 5; i++ {
		if got := probe(); got == first {
			t.Fatalf("after cleanup the flow still reaches removed endpoint %s (%s)", first, removed)
		}
	}
}
