package rules_test

import (
	"slices"
	"testing"

	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/rules"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The expected names are kube-proxy v1.36's, taken from its own tests, so a
// drift in the hash scheme breaks this test rather than operators' runbooks.
func TestChainNamesMatchKubeProxy(t *testing.T) {
	name := model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns1", Name: "svc1"}, Port: "p80", Protocol: v1.ProtocolTCP}
	cases := []struct{ got, want string }{
		{rules.ClusterPolicyChain(name), "KUBE-SVC-XPGD46QRK7WJZT7O"},
		{rules.EndpointChain(name, "10.180.0.1:80"), "KUBE-SEP-SXIVWICOYRO3J4NJ"},
		{rules.ExternalChain(name), "KUBE-EXT-XPGD46QRK7WJZT7O"},
		{rules.LocalPolicyChain(name), "KUBE-SVL-XPGD46QRK7WJZT7O"},
		{rules.FirewallChain(name), "KUBE-FW-XPGD46QRK7WJZT7O"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
	if got := (model.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "svc"}}).String(); got != "ns/svc" {
		t.Errorf("unnamed port: got %q, want ns/svc", got)
	}
}

func TestIsServiceChain(t *testing.T) {
	for chain, want := range map[string]bool{
		"KUBE-SVC-X": true, "KUBE-SVL-X": true, "KUBE-SEP-X": true, "KUBE-FW-X": true, "KUBE-EXT-X": true,
		// dispatch buckets, and their name before 2026-12 (a node upgraded
		// from that version deletes them as stale)
		"KUBE-DISPATCH-1F": true, "KUBE-SVCS-1F": true,
		"KUBE-SERVICES": false, "KUBE-NODEPORTS": false, "KUBE-MARK-MASQ": false, "CNI-FOO": false,
	} {
		if got := rules.IsServiceChain(chain); got != want {
			t.Errorf("IsServiceChain(%q) = %v, want %v", chain, got, want)
		}
	}
}

// Buckets of either name are deleted before the service chains they jump to.
func TestDeletionOrderPutsBucketsFirst(t *testing.T) {
	got := rules.DeletionOrder([]string{"KUBE-SEP-A", "KUBE-SVC-A", "KUBE-SVCS-0", "KUBE-EXT-A", "KUBE-DISPATCH-0", "KUBE-FW-A"})
	want := []string{"KUBE-DISPATCH-0", "KUBE-SVCS-0", "KUBE-FW-A", "KUBE-EXT-A", "KUBE-SVC-A", "KUBE-SEP-A"}
	if !slices.Equal(got, want) {
		t.Errorf("DeletionOrder = %v, want %v", got, want)
	}
}
