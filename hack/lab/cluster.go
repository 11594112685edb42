package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Helpers for tests that drive the lab's API server: what a real cluster's
// kubelets and controllers would have created, and HTTP from inside a
// namespace.

// RegisterNodes creates the lab's Node objects, as kubelets register them:
// name, hostname label, the pod CIDRs and the InternalIP addresses (a proxy
// reads its Node's addresses and pod CIDRs, and /healthz needs it). In a
// dual-stack lab (l.IPv6) a Node has both families, IPv4 first, as a kubelet
// started with --node-ip=<IPv4>,<IPv6> reports them (IPv4 stays the
// primary family, as in the API server's service ranges).
func RegisterNodes(ctx context.Context, cs kubernetes.Interface, l *Lab) error {
	for _, n := range l.Nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name}},
			Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR, PodCIDRs: []string{n.PodCIDR}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.IP},
			}},
		}
		if l.IPv6 && n.IP6 != "" && n.PodCIDR6 != "" {
			node.Spec.PodCIDRs = append(node.Spec.PodCIDRs, n.PodCIDR6)
			node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: n.IP6})
		}
		node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: n.Name})
		created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("lab: create node %s: %w", n.Name, err)
		}
		if len(created.Status.Addresses) == 0 { // status is a subresource
			created.Status = node.Status
			if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("lab: node %s status: %w", n.Name, err)
			}
		}
	}
	return nil
}

// SliceEndpoint is one endpoint of an EndpointSlice: a pod, ready or not
// (not ready = neither ready nor serving, not terminating: a pod failing
// its readiness probe).
type SliceEndpoint struct {
	Pod   *Pod
	Ready bool
}

// EndpointSliceFor returns the IPv4 EndpointSlice the EndpointSlice
// controller would make for svc (namespace ns) and eps: the service-name
// label plus the Service's labels, one port per Service port (its numeric
// target port), endpoints with their node and pod.
func EndpointSliceFor(svc *corev1.Service, ns, name, managedBy string, eps ...SliceEndpoint) *discovery.EndpointSlice {
	return EndpointSliceForFamily(svc, ns, name, managedBy, IPv4, eps...)
}

// EndpointSliceForFamily is EndpointSliceFor for one IP family: an IPv6
// slice (address type IPv6) holds the pods' IPv6 addresses. The API needs a
// slice per address type, so a dual-stack Service has one of each.
func EndpointSliceForFamily(svc *corev1.Service, ns, name, managedBy string, family Family, eps ...SliceEndpoint) *discovery.EndpointSlice {
	addressType := discovery.AddressTypeIPv4
	if family == IPv6 {
		addressType = discovery.AddressTypeIPv6
	}
	slice := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns,
			Labels: map[string]string{
				discovery.LabelServiceName: svc.Name,
				discovery.LabelManagedBy:   managedBy,
			},
		},
		AddressType: addressType,
		Endpoints:   []discovery.Endpoint{},
	}
	for k, v := range svc.Labels {
		slice.Labels[k] = v
	}
	for _, p := range svc.Spec.Ports {
		slice.Ports = append(slice.Ports, discovery.EndpointPort{
			Name: ptr.To(p.Name), Protocol: ptr.To(p.Protocol), Port: ptr.To(int32(p.TargetPort.IntValue())),
		})
	}
	for _, ep := range eps {
		addr := ep.Pod.IP
		if family == IPv6 {
			addr = ep.Pod.IP6
		}
		slice.Endpoints = append(slice.Endpoints, discovery.Endpoint{
			Addresses:  []string{addr},
			Conditions: discovery.EndpointConditions{Ready: ptr.To(ep.Ready), Serving: ptr.To(ep.Ready), Terminating: ptr.To(false)},
			NodeName:   ptr.To(ep.Pod.Node),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: ep.Pod.Name},
		})
	}
	return slice
}

// HTTPGet GETs url with a socket inside namespace ns (3 s limit, no
// keep-alive) and returns the status, Content-Type and body (at most 1 MiB).
func HTTPGet(ns, url string) (code int, contentType, body string, err error) {
	c := &http.Client{
		Timeout:   3 * time.Second,
		Transport: &http.Transport{DialContext: DialContextInNetns(ns), DisableKeepAlives: true},
	}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b), err
}
