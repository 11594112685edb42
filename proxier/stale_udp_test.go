package proxier

import (
	"testing"

	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	v1 "k8s.io/api/core/v1"
)

type fakeConntrack struct {
	flows   []model.UDPFlow
	deleted []model.UDPFlow
}

func (f *fakeConntrack) ListUDP() ([]model.UDPFlow, error) { return f.flows, nil }
func (f *fakeConntrack) Delete(flows []model.UDPFlow) (int, error) {
	f.deleted = append(f.deleted, flows...)
	return len(flows), nil
}

func TestSyncDeletesStaleUDPFlows(t *testing.T) {
	p, _ := newTestProxier(t)
	ct := &fakeConntrack{flows: []model.UDPFlow{testobj.UDPFlow("203.0.113.53:53", "198.51.100.68:5353")}}
	p.cfg.Conntrack = ct
	p.OnServicesSynced()
	p.OnEndpointSlicesSynced()
	dns := testobj.Service("kube-system", "dns", "203.0.113.53", testobj.Port("dns", v1.ProtocolUDP, 53))
	both := testobj.Slice("kube-system", "dns", "dns-1", []testobj.SlicePort{{Name: "dns", Proto: v1.ProtocolUDP, Port: 5353}}, testobj.Endpoint("198.51.100.5"), testobj.Endpoint("198.51.100.68"))
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

func (c *countingConntrack) ListUDP() ([]model.UDPFlow, error)   { c.lists++; return nil, nil }
func (c *countingConntrack) Delete([]model.UDPFlow) (int, error) { return 0, nil }
