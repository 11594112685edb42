package model_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/proxier/model"
	"github.com/svcproxy/svcproxy/proxier/model/testobj"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// key names a Service.
func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func TestIncrementalSnapshotMatchesRebuild(t *testing.T) {
	tr := model.NewChangeTracker(v1.IPv4Protocol)
	snap := model.NewSnapshot()
	now := time.Unix(0, 0)
	shop := testobj.Service("demo", "shop", "203.0.113.20", testobj.Port("http", v1.ProtocolTCP, 80), testobj.Port("metrics", v1.ProtocolTCP, 9090))
	shopSlice := testobj.Slice("demo", "shop", "shop-1", []testobj.SlicePort{{Name: "http", Proto: v1.ProtocolTCP, Port: 8080}, {Name: "metrics", Proto: v1.ProtocolTCP, Port: 9090}}, testobj.Endpoint("198.51.100.4"))
	shopOnePort := testobj.Service("demo", "shop", "203.0.113.20", testobj.Port("http", v1.ProtocolTCP, 80))

	services := map[string]*v1.Service{}
	slices := map[string]*discovery.EndpointSlice{}
	steps := []func(){
		func() {
			services["web"] = testobj.WebService()
			tr.ServiceChanged(key("demo", "web"), testobj.WebService(), now)
		},
		func() { slices["web"] = testobj.WebSlice(); tr.EndpointSliceChanged(testobj.WebSlice(), false, now) },
		func() { services["shop"] = shop; tr.ServiceChanged(key("demo", "shop"), shop, now) },
		func() { slices["shop"] = shopSlice; tr.EndpointSliceChanged(shopSlice, false, now) },
		func() { delete(services, "web"); tr.ServiceChanged(key("demo", "web"), nil, now) },
		func() { services["shop"] = shopOnePort; tr.ServiceChanged(key("demo", "shop"), shopOnePort, now) },
		func() { delete(slices, "web"); tr.EndpointSliceChanged(testobj.WebSlice(), true, now) },
		func() {
			services["web"] = testobj.WebService()
			tr.ServiceChanged(key("demo", "web"), testobj.WebService(), now)
		},
	}
	for i, step := range steps {
		step()
		if i%2 == 1 || i == len(steps)-1 {
			tr.Update(snap)
		}
		var svcs []*v1.Service
		for _, s := range services {
			svcs = append(svcs, s)
		}
		var sls []*discovery.EndpointSlice
		for _, s := range slices {
			sls = append(sls, s)
		}
		want, _ := model.BuildSnapshot(svcs, sls, v1.IPv4Protocol)
		if i%2 == 1 || i == len(steps)-1 {
			if !reflect.DeepEqual(snap.Services, want.Services) || !reflect.DeepEqual(snap.Endpoints, want.Endpoints) {
				t.Fatalf("after step %d the incremental snapshot differs from a rebuild:\n got %v / %v\nwant %v / %v", i, snap.Services, snap.Endpoints, want.Services, want.Endpoints)
			}
		}
	}
}
