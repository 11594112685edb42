// Package explaintest builds the Services explain's tests trace through:
// many of them, on TEST-NET addresses only.
package explaintest

import (
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/proxier/model/testobj"
)

// PortsPerService is how many ports each Service of Services has.
const PortsPerService = 40

// serviceIPs are the cluster IPs Services hands out, in order: the
// TEST-NET ranges hold 762 addresses, so Services builds up to 30,480
// service ports.
var serviceIPs = []netip.Prefix{
	netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/24"),
}

// ServiceIP is the cluster IP of Service i of Services.
func ServiceIP(i int) netip.Addr {
	pool := serviceIPs[i/254]
	b := pool.Addr().As4()
	b[3] = byte(1 + i%254)
	return netip.AddrFrom4(b)
}

// Services returns ports service ports: Services bench/svc-I with
// PortsPerService TCP ports each, named pJ with port 1000+J, each with two
// endpoints in 198.51.100.0/24 (port 8000+J) on node1 and node2.
func Services(ports int) ([]*v1.Service, []*discovery.EndpointSlice) {
	if ports > len(serviceIPs)*254*PortsPerService {
		panic(fmt.Sprintf("explaintest: at most %d service ports", len(serviceIPs)*254*PortsPerService))
	}
	var svcs []*v1.Service
	var slices []*discovery.EndpointSlice
	for i := 0; i*PortsPerService < ports; i++ {
		name := fmt.Sprintf("svc-%d", i)
		n := min(PortsPerService, ports-i*PortsPerService)
		var svcPorts []func(*v1.Service)
		var slicePorts []testobj.SlicePort
		for j := range n {
			svcPorts = append(svcPorts, testobj.Port(fmt.Sprintf("p%d", j), v1.ProtocolTCP, int32(1000+j)))
			slicePorts = append(slicePorts, testobj.SlicePort{Name: fmt.Sprintf("p%d", j), Proto: v1.ProtocolTCP, Port: int32(8000 + j)})
		}
		svcs = append(svcs, testobj.Service("bench", name, ServiceIP(i).String(), svcPorts...))
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(2 + i%60)})
		b := netip.AddrFrom4([4]byte{198, 51, 100, byte(66 + i%60)})
		slices = append(slices, testobj.Slice("bench", name, name+"-1", slicePorts,
			testobj.Endpoint(a.String(), testobj.OnNode("node1")), testobj.Endpoint(b.String(), testobj.OnNode("node2"))))
	}
	return svcs, slices
}
