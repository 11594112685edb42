package explain

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/explain/explaintest"
	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	"github.com/svcproxy/svcproxy/proxier/nodeconfig"
	"github.com/svcproxy/svcproxy/proxier/objfile"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

func TestParseServiceRef(t *testing.T) {
	for in, want := range map[string]string{
		"demo/web": "demo/web", "demo/web:http": "demo/web:http", "kube-system/dns:53": "kube-system/dns:53",
		"203.0.113.10:80": "", "web": "", "demo/Web": "", "demo/web:": "", "a/b/c": "",
	} {
		ref, ok := ParseServiceRef(in)
		if got := map[bool]string{true: ref.String()}[ok]; got != want {
			t.Errorf("ParseServiceRef(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveService(t *testing.T) {
	objs, err := objfile.Load("../../manifests/examples", nil)
	if err != nil {
		t.Fatal(err)
	}
	headless := testobj.Service("demo", "headless", v1.ClusterIPNone, testobj.Port("http", v1.ProtocolTCP, 80))
	svcs := append(objs.Services, headless)
	for _, tt := range []struct{ ref, proto, want string }{
		{"demo/web", "", "demo/web:http 203.0.113.10:80 tcp"},
		{"demo/web:http", "", "demo/web:http 203.0.113.10:80 tcp"},
		{"demo/web:80", "", "demo/web:http 203.0.113.10:80 tcp"},
		{"kube-system/dns:dns-tcp", "", "kube-system/dns:dns-tcp 203.0.113.53:53 tcp"},
		{"kube-system/dns:53", "udp", "kube-system/dns:dns 203.0.113.53:53 udp"},
		{"kube-system/dns", "", "error: service kube-system/dns has several ports: dns (udp 53), dns-tcp (tcp 53); name one: --to kube-system/dns:PORT"},
		{"kube-system/dns:53", "", "error: service kube-system/dns:53 has several ports 53: dns (udp 53), dns-tcp (tcp 53); give --proto"},
		{"demo/web:https", "", "error: service demo/web has no port https; it has http (tcp 80)"},
		{"demo/nope", "", "error: service demo/nope not found"},
		{"demo/headless", "", "error: service demo/headless has no cluster IP (headless or ExternalName): give an endpoint's address"},
	} {
		ref, _ := ParseServiceRef(tt.ref)
		sp, err := ResolveService(ref, svcs, v1.IPv4Protocol, tt.proto)
		got := sp.Name + " " + netip.AddrPortFrom(sp.IP, uint16(sp.Port)).String() + " " + sp.Protocol
		if err != nil {
			got = "error: " + err.Error()
		}
		if got != tt.want {
			t.Errorf("ResolveService(%s, %q) = %s, want %s", tt.ref, tt.proto, got, tt.want)
		}
	}
}

// Names resolve from rule comments too: in the dispatch buckets of a
// compact layout (read chain by chain), in filter for a Service without
// endpoints, and in a saved file.
func TestResolveFromComments(t *testing.T) {
	svcs, slices := explaintest.Services(400) // above the dispatch threshold: KUBE-SERVICES jumps to buckets
	svcs = append(svcs, testobj.Service("demo", "empty", "203.0.113.250", testobj.Port("http", v1.ProtocolTCP, 80)))
	cfg := (&nodeconfig.Builder{Settings: nodeconfig.Settings{MasqueradeBit: 14, DetectLocalMode: nodeconfig.LocalModeClusterCIDR},
		Family: v1.IPv4Protocol, NodeName: "node1", RandomFully: true}).Build(nil)
	snap, err := model.BuildSnapshot(svcs, slices, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	fake := iptables.NewFake(iptables.IPv4)
	if err := fake.Restore(context.Background(), rules.WithJumps(rules.Render(snap, cfg, rules.RenderOptions{Full: true}).Data, rules.JumpsFor(cfg)), iptables.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if top, _ := fake.SaveChain(context.Background(), iptables.TableNAT, "KUBE-SERVICES"); !strings.Contains(string(top), "-j KUBE-DISPATCH-") {
		t.Fatalf("no dispatch buckets:\n%s", top)
	}
	chains := NewLiveChains(context.Background(), fake)
	for _, tt := range []struct{ ref, want string }{
		{"bench/svc-7:p3", "bench/svc-7:p3 " + explaintest.ServiceIP(7).String() + ":1003 tcp"},
		{"bench/svc-9:1039", "bench/svc-9:p39 " + explaintest.ServiceIP(9).String() + ":1039 tcp"},
		{"demo/empty", "demo/empty:http 203.0.113.250:80 tcp"},
		{"bench/svc-7", "error: service bench/svc-7 has several ports: p0 (tcp 1000), p1 (tcp 1001)"},
		{"bench/svc-999", "error: service bench/svc-999 not found in the rule comments of the nat and filter KUBE-SERVICES chains"},
	} {
		ref, _ := ParseServiceRef(tt.ref)
		sp, err := ResolveFromComments(ref, chains, "")
		got := sp.Name + " " + netip.AddrPortFrom(sp.IP, uint16(sp.Port)).String() + " " + sp.Protocol
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("ResolveFromComments(%s) = %s, want %s", tt.ref, got, tt.want)
		}
	}
	if n := fake.Saves(); n != 0 {
		t.Errorf("resolving by comments saved whole tables %d times", n)
	}

	saved := loadSaved(t, "flannel-docker-legacy-1.4.21.txt")
	ref, _ := ParseServiceRef("demo/web")
	if sp, err := ResolveFromComments(ref, trace.DumpChains{Dump: saved.Rules}, ""); err != nil || sp.IP != netip.MustParseAddr("203.0.113.10") || sp.Port != 80 {
		t.Errorf("saved 1.4.21 file: %+v %v", sp, err)
	}
}
