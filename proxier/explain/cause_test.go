package explain

import (
	"net/netip"
	"testing"

	"github.com/svcproxy/svcproxy/iptables/trace"
)

func TestCause(t *testing.T) {
	pkt := trace.Packet{Src: netip.MustParseAddr("203.0.113.100"), Dst: netip.MustParseAddr("203.0.113.140"), Protocol: "tcp", DstPort: 80}
	tests := []struct {
		name    string
		verdict string
		last    Step
		want    string
	}{
		{"no endpoints", "REJECT",
			Step{"filter", "KUBE-SERVICES", 3, `-A KUBE-SERVICES -m comment --comment "demo/empty:http has no endpoints" -m tcp -p tcp -d 203.0.113.30 --dport 80 -j REJECT`},
			"REJECT: Service demo/empty port http has no endpoints (filter KUBE-SERVICES rule 3)"},
		{"no endpoints, unnamed port", "REJECT",
			Step{"filter", "KUBE-EXTERNAL-SERVICES", 1, `-A KUBE-EXTERNAL-SERVICES -m comment --comment "demo/empty-np: has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30031 -j REJECT`},
			"REJECT: Service demo/empty-np has no endpoints (filter KUBE-EXTERNAL-SERVICES rule 1)"},
		{"external traffic policy local", "DROP",
			Step{"filter", "KUBE-EXTERNAL-SERVICES", 1, `-A KUBE-EXTERNAL-SERVICES -m comment --comment "demo/lb:http has no local endpoints" -m tcp -p tcp -d 203.0.113.140 --dport 80 -j DROP`},
			"DROP: demo/lb:http has externalTrafficPolicy Local and this node has no local endpoint (filter KUBE-EXTERNAL-SERVICES rule 1)"},
		{"internal traffic policy local", "DROP",
			Step{"filter", "KUBE-SERVICES", 1, `-A KUBE-SERVICES -m comment --comment "demo/web:http has no local endpoints" -m tcp -p tcp -d 203.0.113.10 --dport 80 -j DROP`},
			"DROP: demo/web:http has internalTrafficPolicy Local and this node has no local endpoint (filter KUBE-SERVICES rule 1)"},
		{"source ranges", "DROP",
			Step{"filter", "KUBE-PROXY-FIREWALL", 1, `-A KUBE-PROXY-FIREWALL -m comment --comment "demo/lb:http traffic not accepted by KUBE-FW-MWAZOLWASR2RTM3S" -m tcp -p tcp -d 203.0.113.140 --dport 80 -j DROP`},
			"DROP: source 203.0.113.100 not in loadBalancerSourceRanges of demo/lb:http (filter KUBE-PROXY-FIREWALL rule 1)"},
		{"localnet", "DROP",
			Step{"filter", "KUBE-FIREWALL", 1, `-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`},
			"DROP: connections to 203.0.113.140 from outside 127.0.0.0/8 are blocked (kubelet's localnet firewall) (filter KUBE-FIREWALL rule 1)"},
		{"invalid", "DROP",
			Step{"filter", "KUBE-FORWARD", 1, `-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP`},
			"DROP: conntrack marks the packet INVALID (filter KUBE-FORWARD rule 1)"},
		{"policy", "DROP",
			Step{"filter", "FORWARD", 0, `:FORWARD DROP`},
			"DROP: the filter FORWARD chain's policy is DROP and no rule accepted the packet"},
		{"other commented rule", "DROP",
			Step{"filter", "INPUT", 7, `-A INPUT -m comment --comment "site policy" -j DROP`},
			`DROP: rule "site policy" (filter INPUT rule 7)`},
		{"uncommented rule", "REJECT",
			Step{"filter", "INPUT", 2, `-A INPUT -p tcp --dport 80 -j REJECT`},
			"REJECT by (filter INPUT rule 2)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := []Step{{"nat", "PREROUTING", 1, "-A PREROUTING -j KUBE-SERVICES"}, tt.last}
			if got := Cause(tt.verdict, path, pkt); got != tt.want {
				t.Errorf("Cause =\n  %s\nwant\n  %s", got, tt.want)
			}
		})
	}
}

func TestServiceOf(t *testing.T) {
	for raw, want := range map[string]string{
		`-A KUBE-SERVICES -m comment --comment "demo/web:http cluster IP" -j KUBE-SVC-X`:                  "demo/web:http",
		`-A KUBE-NODEPORTS -m comment --comment demo/shop:http -m tcp -p tcp --dport 30080 -j KUBE-EXT-X`: "demo/shop:http",
		`-A KUBE-SERVICES -m comment --comment "demo/np: has no endpoints" -j REJECT`:                     "demo/np:",
		`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`:                "",
		`-A PREROUTING -j KUBE-SERVICES`: "",
	} {
		if got := ServiceOf([]trace.Step{{Raw: raw}}); got != want {
			t.Errorf("ServiceOf(%s) = %q, want %q", raw, got, want)
		}
	}
}
