// Package proxier is svcproxy's daemon: it keeps one node's service rules in
// step with the API server, one Proxier per IP family.
//
// The layers, each a package of its own:
//
//	informers (informers.go) ── handlers record and nudge ──▶ model.ChangeTracker
//	                                                              │ Sync()
//	async.BoundedFrequencyRunner ── one sync goroutine ──▶ Proxier.syncProxyRules
//	                                                              │
//	rules.Render (pure) ──▶ Apply: ipsets, jumps, one iptables-restore --noflush
//
// Only the sync goroutine writes to the kernel. Any failure makes the next
// sync a full one; a full sync also follows a Node change, a flushed table
// (the canary chains), crossing the large-cluster threshold, and an hour
// without one. Cleanup removes everything svcproxy or kube-proxy (iptables
// mode) created. MultiHandlers fans one set of informers out to the
// per-family proxiers.
//
// Sub-packages: model (the cluster as service ports and endpoints), rules
// (the pure renderer), nodeconfig (settings + node facts → rules.NodeConfig,
// IP family planning), host (addresses, sysctls, routes), conntrack (UDP
// flow clean-up, conntrack sysctls), healthcheck (healthz and service health
// checks), metrics (kubeproxy_* metrics), async (the bounded-frequency
// runner), explain (diagnosis behind svcproxy explain), objfile (manifest
// files for dump and explain).
package proxier
