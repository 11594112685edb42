package proxier

import (
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

func udpFlow(dst, replySrc string) UDPFlow {
	return UDPFlow{OrigDst: netip.MustParseAddrPort(dst), ReplySrc: netip.MustParseAddrPort(replySrc), Key: dst + ">" + replySrc}
}

func TestStaleUDPFlows(t *testing.T) {
	svc := service("kube-system", "dns", "203.0.113.53", nodePort("dns", v1.ProtocolUDP, 53, 30053), externalIPs("203.0.113.153"))
	tcp := service("demo", "web", "203.0.113.10", port("http", v1.ProtocolTCP, 80))
	empty := service("demo", "udp-empty", "203.0.113.54", port("u", v1.ProtocolUDP, 53))
	snap, err := BuildSnapshot([]*v1.Service{svc, tcp, empty}, []*discovery.EndpointSlice{
		slice("kube-system", "dns", "dns-1", []slicePort{{"dns", v1.ProtocolUDP, 5353}}, endpoint("198.51.100.5"), endpoint("198.51.100.68", terminating(true))),
		webSlice,
	}, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	flows := []UDPFlow{
		udpFlow("203.0.113.53:53", "198.51.100.5:5353"),     // live endpoint: keep
		udpFlow("203.0.113.53:53", "198.51.100.68:5353"),    // serving while terminating: keep
		udpFlow("203.0.113.53:53", "198.51.100.9:5353"),     // endpoint gone: stale
		udpFlow("203.0.113.53:53", "203.0.113.53:53"),       // never DNATed (no endpoints then): stale
		udpFlow("203.0.113.153:53", "198.51.100.9:5353"),    // external IP, endpoint gone: stale
		udpFlow("192.0.2.11:30053", "198.51.100.9:5353"),    // node port, endpoint gone: stale
		udpFlow("203.0.113.54:53", "203.0.113.54:53"),       // service without endpoints: keep
		udpFlow("203.0.113.10:80", "198.51.100.9:8080"),     // not a UDP service: keep
		udpFlow("198.51.100.66:9999", "198.51.100.66:9999"), // not a service at all: keep
	}
	var got []string
	for _, f := range StaleUDPFlows(snap, flows) {
		got = append(got, f.Key)
	}
	want := []string{
		"203.0.113.53:53>198.51.100.9:5353", "203.0.113.53:53>203.0.113.53:53",
		"203.0.113.153:53>198.51.100.9:5353", "192.0.2.11:30053>198.51.100.9:5353",
	}
	if !slices.Equal(got, want) {
		t.Errorf("stale flows:\n got %v\nwant %v", got, want)
	}
}

type fakeConntrack struct {
	flows   []UDPFlow
	deleted []UDPFlow
}

func (f *fakeConntrack) ListUDP() ([]UDPFlow, error) { return f.flows, nil }
func (f *fakeConntrack) Delete(flows []UDPFlow) (int, error) {
	f.deleted = append(f.deleted, flows...)
	return len(flows), nil
}

func TestSyncDeletesStaleUDPFlows(t *testing.T) {
	p, _ := newTestProxier(t)
	ct := &fakeConntrack{flows: []UDPFlow{udpFlow("203.0.113.53:53", "198.51.100.68:5353")}}
	p.cfg.Conntrack = ct
	p.OnServicesSynced()
	p.OnEndpointSlicesSynced()
	dns := service("kube-system", "dns", "203.0.113.53", port("dns", v1.ProtocolUDP, 53))
	both := slice("kube-system", "dns", "dns-1", []slicePort{{"dns", v1.ProtocolUDP, 5353}}, endpoint("198.51.100.5"), endpoint("198.51.100.68"))
	p.OnServiceAdd(dns)
	p.OnEndpointSliceAdd(both)
	mustSync(t, p)
	if len(ct.deleted) != 0 {
		t.Fatalf("deleted a flow to a live endpoint: %v", ct.deleted)
	}
	one := both.DeepCopy()
	one.Endpoints = one.Endpoints[:1]
	p.OnEndpointSliceUpdate(both, one)
	mustSync(t, p)
	if len(ct.deleted) != 1 || ct.deleted[0].ReplySrc.String() != "198.51.100.68:5353" {
		t.Fatalf("after removing 198.51.100.68 want its flow deleted, got %v", ct.deleted)
	}
}

// A change to a TCP-only Service does not list the conntrack table.
func TestTCPChangeSkipsConntrack(t *testing.T) {
	p, _ := newTestProxier(t)
	ct := &countingConntrack{}
	p.cfg.Conntrack = ct
	p.OnServicesSynced()
	p.OnEndpointSlicesSynced()
	p.OnServiceAdd(webService)
	p.OnEndpointSliceAdd(webSlice)
	mustSync(t, p) // full: always cleans
	if ct.lists != 1 {
		t.Fatalf("full sync listed conntrack %d times, want 1", ct.lists)
	}
	scaled := webSlice.DeepCopy()
	scaled.Endpoints = scaled.Endpoints[:1]
	p.OnEndpointSliceUpdate(webSlice, scaled)
	mustSync(t, p)
	if ct.lists != 1 {
		t.Fatalf("a TCP-only change listed conntrack (%d lists)", ct.lists)
	}
}

type countingConntrack struct{ lists int }

func (c *countingConntrack) ListUDP() ([]UDPFlow, error)   { c.lists++; return nil, nil }
func (c *countingConntrack) Delete([]UDPFlow) (int, error) { return 0, nil }
