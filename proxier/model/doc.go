// Package model is svcproxy's pure view of the cluster for one IP family:
// what kube-proxy calls the service and endpoints maps, with nothing about
// iptables in it.
//
//   - ServicePortsFromService and EndpointsFromSlices convert API objects,
//     reporting every field they cannot use as a *FieldError naming the
//     object and field;
//   - a Snapshot holds the converted service ports and endpoints;
//     BuildSnapshot makes one from lists (dump, explain), ChangeTracker keeps
//     one up to date from informer events (the daemon), dropping changes that
//     change nothing;
//   - CategorizeEndpoints chooses, as kube-proxy v1.36 does, which endpoints
//     each traffic policy uses on this node (readiness, terminating
//     fallback, topology hints);
//   - small pure questions the daemon asks of a Snapshot: which UDP flows
//     are stale, which health-check node ports exist, how many local
//     endpoints each Service has.
//
// Nothing here touches the kernel or the API server, and nothing here knows
// about chains beyond the naming hashes kube-proxy derives chain names from.
package model
