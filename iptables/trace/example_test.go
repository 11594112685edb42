package trace_test

import (
	"fmt"
	"net/netip"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
)

func ExampleTrace() {
	rules, err := iptables.ParseDump([]byte(`*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-X - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 203.0.113.10 --dport 80 -j KUBE-SVC-X
-A KUBE-SVC-X -m statistic --mode random --probability 0.5000000000 -j DNAT --to-destination 198.51.100.2:8080
-A KUBE-SVC-X -j DNAT --to-destination 198.51.100.3:8080
COMMIT
`))
	if err != nil {
		panic(err)
	}
	outcomes, err := trace.Trace(rules, trace.Context{}, trace.Packet{
		Src:      netip.MustParseAddr("198.51.100.7"),
		Dst:      netip.MustParseAddr("203.0.113.10"),
		Protocol: "tcp",
		DstPort:  80,
		Origin:   trace.Incoming,
	})
	if err != nil {
		panic(err)
	}
	for _, o := range outcomes {
		fmt.Println(o)
		for _, s := range o.Path {
			fmt.Println("   ", s)
		}
	}
	fmt.Println(trace.Endpoints(outcomes))
	// Output:
	// ACCEPT endpoint=198.51.100.2:8080 mark=0x0
	//     nat/PREROUTING[0]: -A PREROUTING -j KUBE-SERVICES
	//     nat/KUBE-SERVICES[0]: -A KUBE-SERVICES -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 203.0.113.10 --dport 80 -j KUBE-SVC-X
	//     nat/KUBE-SVC-X[0]: -A KUBE-SVC-X -m statistic --mode random --probability 0.5000000000 -j DNAT --to-destination 198.51.100.2:8080
	// ACCEPT endpoint=198.51.100.3:8080 mark=0x0
	//     nat/PREROUTING[0]: -A PREROUTING -j KUBE-SERVICES
	//     nat/KUBE-SERVICES[0]: -A KUBE-SERVICES -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 203.0.113.10 --dport 80 -j KUBE-SVC-X
	//     nat/KUBE-SVC-X[1]: -A KUBE-SVC-X -j DNAT --to-destination 198.51.100.3:8080
	// [198.51.100.2:8080 198.51.100.3:8080]
}
