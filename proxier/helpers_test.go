package proxier

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/rules/rulestest"
)

var (
	webService = testobj.WebService()
	webSlice   = testobj.WebSlice()
	// lbService is demo/lb: a LoadBalancer with externalTrafficPolicy Local
	// and its health-check node port; lbSlice has one endpoint on node1 and
	// one on node2.
	lbService = testobj.Service("demo", "lb", "203.0.113.40",
		testobj.NodePort("http", v1.ProtocolTCP, 80, 30040), testobj.LoadBalancer("203.0.113.140"), testobj.ExternalLocal(31040))
	lbSlice = testobj.Slice("demo", "lb", "lb-1", testobj.TCPPort("http", 8080),
		testobj.Endpoint("198.51.100.6", testobj.OnNode("node1")), testobj.Endpoint("198.51.100.70", testobj.OnNode("node2")))
)

// applyToFake applies one full sync of the objects, as the daemon's first
// sync would, to a fresh Fake.
func applyToFake(t *testing.T, services []*v1.Service, slices []*discovery.EndpointSlice) *iptables.Fake {
	t.Helper()
	snap, err := model.BuildSnapshot(services, slices, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	ipt := iptables.NewFake(iptables.IPv4)
	if _, err := Apply(context.Background(), ipt, ApplyRequest{Snapshot: snap, Config: rulestest.NodeConfig(), Full: true}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return ipt
}
