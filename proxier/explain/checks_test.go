package explain

import (
	"fmt"
	"io/fs"
	"net/netip"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/host"
)

// fakeRoutes answers RouteGet from a table of prefixes (longest first is
// up to the test: the first containing prefix wins).
type fakeRoutes []struct {
	prefix string
	route  host.Route
}

func (f fakeRoutes) RouteGet(dst netip.Addr) (host.Route, error) {
	for _, r := range f {
		if netip.MustParsePrefix(r.prefix).Contains(dst) {
			return r.route, nil
		}
	}
	return host.Route{}, fmt.Errorf("network is unreachable")
}

type fakeSysctls map[string]string

func (f fakeSysctls) Sysctl(name string) (string, error) {
	v, ok := f[name]
	if !ok {
		return "", fmt.Errorf("open /proc/sys/%s: %w", name, fs.ErrNotExist)
	}
	return v, nil
}

const sampleRules = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-X - [0:0]
:KUBE-NODEPORTS - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
-A KUBE-SERVICES -m comment --comment "demo/web:http cluster IP" -m tcp -p tcp -d 203.0.113.10 --dport 80 -j KUBE-SVC-X
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -m comment --comment demo/web:http -m tcp -p tcp --dport 30080 -j KUBE-SVC-X
-A KUBE-SVC-X -m comment --comment "demo/web:http -> 198.51.100.2:8080" -m statistic --mode random --probability 0.5000000000 -j DNAT --to-destination 198.51.100.2:8080
-A KUBE-SVC-X -m comment --comment "demo/web:http -> 198.51.100.66:8080" -j DNAT --to-destination 198.51.100.66:8080
COMMIT
`

var (
	nodeIP   = netip.MustParseAddr("192.0.2.11")
	nodeCtx  = trace.Context{LocalAddrs: []netip.Addr{nodeIP}}
	goodNode = fakeRoutes{
		{"198.51.100.0/26", host.Route{Iface: "cbr0", Src: "198.51.100.1"}},
		{"198.51.100.64/26", host.Route{Iface: "eth0", Gateway: "192.0.2.12", Src: "192.0.2.11"}},
		{"127.0.0.0/8", host.Route{Iface: "lo"}},
		{"0.0.0.0/0", host.Route{Iface: "eth0", Gateway: "192.0.2.1", Src: "192.0.2.11"}},
	}
	goodSysctls = fakeSysctls{
		"net.ipv4.ip_forward":                "1",
		"net.ipv4.conf.all.route_localnet":   "1",
		"net.bridge.bridge-nf-call-iptables": "1",
	}
)

func check(t *testing.T, p trace.Packet, n Node) *Report {
	t.Helper()
	d, err := iptables.ParseDump([]byte(sampleRules))
	if err != nil {
		t.Fatal(err)
	}
	if p.Protocol == "" {
		p.Protocol = "tcp"
	}
	r, err := Explain(trace.DumpChains{Dump: d}, nodeCtx, p)
	if err != nil {
		t.Fatal(err)
	}
	Check(r, nodeCtx, p, n)
	return r
}

func pkt(src, dst string, port int, origin trace.Origin) trace.Packet {
	return trace.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), DstPort: port, Origin: origin}
}

func with(s fakeSysctls, kv ...string) fakeSysctls {
	out := fakeSysctls{}
	for k, v := range s {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

func TestCheck(t *testing.T) {
	noDefault := goodNode[:3]
	tests := []struct {
		name     string
		pkt      trace.Packet
		node     Node
		status   Status
		problems []string // substrings, one per problem, in order
	}{
		{"healthy node, from a pod", pkt("198.51.100.3", "203.0.113.10", 80, trace.Incoming),
			Node{Routes: goodNode, Sysctls: goodSysctls, Bridges: []string{"cbr0"}, BridgesKnown: true}, StatusOK, nil},
		{"healthy node, from the node", pkt("192.0.2.11", "203.0.113.10", 80, trace.Local),
			Node{Routes: goodNode, Sysctls: goodSysctls, Bridges: nil, BridgesKnown: true}, StatusOK, nil},
		{"no route to the cluster IP from the node", pkt("192.0.2.11", "203.0.113.10", 80, trace.Local),
			Node{Routes: noDefault, Sysctls: goodSysctls, Bridges: nil, BridgesKnown: true}, StatusFail,
			[]string{"error: no route to 203.0.113.10 (network is unreachable): connections from this node fail before DNAT; add a default route or a route for the service CIDR"}},
		{"no default route does not matter to forwarded traffic", pkt("198.51.100.3", "203.0.113.10", 80, trace.Incoming),
			Node{Routes: noDefault, Sysctls: goodSysctls, Bridges: nil, BridgesKnown: true}, StatusOK, nil},
		{"forwarding off", pkt("192.0.2.100", "192.0.2.11", 30080, trace.Incoming),
			Node{Routes: goodNode, Sysctls: with(goodSysctls, "net.ipv4.ip_forward", "0"), Bridges: nil, BridgesKnown: true}, StatusFail,
			[]string{"error: net.ipv4.ip_forward=0"}},
		{"forwarding off does not matter from the node", pkt("192.0.2.11", "203.0.113.10", 80, trace.Local),
			Node{Routes: goodNode, Sysctls: with(goodSysctls, "net.ipv4.ip_forward", "0"), Bridges: nil, BridgesKnown: true}, StatusOK, nil},
		{"route_localnet off for a localhost NodePort", pkt("127.0.0.1", "127.0.0.1", 30080, trace.Local),
			Node{Routes: goodNode, Sysctls: with(goodSysctls, "net.ipv4.conf.all.route_localnet", "0"), Bridges: nil, BridgesKnown: true}, StatusFail,
			[]string{"error: net.ipv4.conf.all.route_localnet=0"}},
		{"br_netfilter missing, same bridge", pkt("198.51.100.3", "203.0.113.10", 80, trace.Incoming),
			Node{Routes: goodNode, Sysctls: with(goodSysctls, "net.bridge.bridge-nf-call-iptables", ""), Bridges: []string{"cbr0"}, BridgesKnown: true}, StatusFail,
			[]string{"error: net.bridge.bridge-nf-call-iptables is missing (br_netfilter not loaded) and bridge cbr0 is present: replies from 198.51.100.2:8080 to 198.51.100.3"}},
		{"bridge-nf off, client off the bridge", pkt("192.0.2.100", "192.0.2.11", 30080, trace.Incoming),
			Node{Routes: goodNode, Sysctls: with(goodSysctls, "net.bridge.bridge-nf-call-iptables", "0"), Bridges: []string{"cbr0"}, BridgesKnown: true}, StatusOK,
			[]string{"warning: net.bridge.bridge-nf-call-iptables=0 and bridge cbr0 is present: pods reaching a service endpoint on the same bridge (hairpin) will fail"}},
		{"no route to an endpoint", pkt("192.0.2.100", "192.0.2.11", 30080, trace.Incoming),
			Node{Routes: goodNode[:1], Sysctls: goodSysctls, Bridges: nil, BridgesKnown: true}, StatusFail,
			[]string{"error: no route to endpoint 198.51.100.66:8080: network is unreachable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := check(t, tt.pkt, tt.node)
			if r.Status != tt.status {
				t.Errorf("status %s, want %s\n%s", r.Status, tt.status, r.Text())
			}
			if len(r.Problems) != len(tt.problems) {
				t.Fatalf("problems %v, want %d\n%s", r.Problems, len(tt.problems), r.Text())
			}
			for i, p := range r.Problems {
				if got := string(p.Severity) + ": " + p.Message; !strings.Contains(got, tt.problems[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got, tt.problems[i])
				}
			}
			if tt.status == StatusFail && len(r.Problems) > 0 && !strings.Contains(r.Verdict, "FAIL: ") {
				t.Errorf("verdict %q does not name the problem", r.Verdict)
			}
		})
	}
}

func TestEndpointRoutes(t *testing.T) {
	r := check(t, pkt("198.51.100.3", "203.0.113.10", 80, trace.Incoming), Node{Routes: goodNode, Sysctls: goodSysctls, Bridges: nil, BridgesKnown: true})
	var got []string
	for _, rt := range r.Routes {
		got = append(got, rt.String())
	}
	want := "198.51.100.2 dev cbr0 src 198.51.100.1|198.51.100.66 via 192.0.2.12 dev eth0 src 192.0.2.11"
	if strings.Join(got, "|") != want {
		t.Errorf("routes %q, want %q", got, want)
	}
	if !strings.Contains(r.Text(), "routes:\n  198.51.100.2 dev cbr0") {
		t.Errorf("text lacks the routes:\n%s", r.Text())
	}
}
