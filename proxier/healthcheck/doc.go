// Package healthcheck is svcproxy's health checking, both kinds kube-proxy
// serves, with kube-proxy v1.36's semantics and JSON bodies so that load
// balancers and probes written for kube-proxy work unchanged:
//
//   - ProxyHealth (proxy.go): /healthz and /livez on the healthz bind address
//     (default 0.0.0.0:10256), saying whether the proxy keeps up with changes
//     and whether the node is eligible for traffic;
//   - ServiceHealthServer (service.go): one HTTP server per
//     healthCheckNodePort of LoadBalancer Services with externalTrafficPolicy
//     Local, saying whether this node has a ready local endpoint.
//
// Health rule of ProxyHealth (per IP family, as kube-proxy): the proxier
// calls QueueUpdated when it learns of a change it has not yet programmed
// and Updated when a sync has finished. A family is unhealthy when its
// oldest queued change is HealthTimeout old or older (kube-proxy uses 2 ×
// syncPeriod) and no Updated has come since. A family that has never called
// Updated counts as healthy (starting up), as does one with nothing queued.
//
// /livez reports that health alone. /healthz additionally requires the node
// to be eligible for traffic: known (SyncNode has been given it), not being
// deleted, and not tainted ToBeDeletedByClusterAutoscaler. Cloud load
// balancers probe /healthz to drain nodes about to go away.
package healthcheck
