package model_test

import (
	"slices"
	"testing"

	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

func TestStaleUDPFlows(t *testing.T) {
	svc := testobj.Service("kube-system", "dns", "203.0.113.53", testobj.NodePort("dns", v1.ProtocolUDP, 53, 30053), testobj.ExternalIPs("203.0.113.153"))
	tcp := testobj.Service("demo", "web", "203.0.113.10", testobj.Port("http", v1.ProtocolTCP, 80))
	empty := testobj.Service("demo", "udp-empty", "203.0.113.54", testobj.Port("u", v1.ProtocolUDP, 53))
	snap, err := model.BuildSnapshot([]*v1.Service{svc, tcp, empty}, []*discovery.EndpointSlice{
		testobj.Slice("kube-system", "dns", "dns-1", []testobj.SlicePort{{Name: "dns", Proto: v1.ProtocolUDP, Port: 5353}}, testobj.Endpoint("198.51.100.5"), testobj.Endpoint("198.51.100.68", testobj.Terminating(true))),
		testobj.WebSlice(),
	}, v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	flows := []model.UDPFlow{
		testobj.UDPFlow("203.0.113.53:53", "198.51.100.5:5353"),     // live endpoint: keep
		testobj.UDPFlow("203.0.113.53:53", "198.51.100.68:5353"),    // serving while terminating: keep
		testobj.UDPFlow("203.0.113.53:53", "198.51.100.9:5353"),     // endpoint gone: stale
		testobj.UDPFlow("203.0.113.53:53", "203.0.113.53:53"),       // never DNATed (no endpoints then): stale
		testobj.UDPFlow("203.0.113.153:53", "198.51.100.9:5353"),    // external IP, endpoint gone: stale
		testobj.UDPFlow("192.0.2.11:30053", "198.51.100.9:5353"),    // node port, endpoint gone: stale
		testobj.UDPFlow("203.0.113.54:53", "203.0.113.54:53"),       // service without endpoints: keep
		testobj.UDPFlow("203.0.113.10:80", "198.51.100.9:8080"),     // not a UDP service: keep
		testobj.UDPFlow("198.51.100.66:9999", "198.51.100.66:9999"), // not a service at all: keep
	}
	var got []string
	for _, f := range model.StaleUDPFlows(snap, flows) {
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
