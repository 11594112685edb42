// Package e2e is svcproxy's end-to-end test tier: the real daemon, built from
// this module, runs in every node namespace of a hack/lab cluster network and
// is driven only through a real kube-apiserver (hack/lab control plane).
// Every assertion is made with real traffic (hack/echoserver backends) or by
// reading the kernel's rules inside a node namespace.
//
// The tests run only with SVCPROXY_E2E=1, as root, with the pinned
// kube-apiserver built (hack/build-kube-apiserver.sh):
//
//	SVCPROXY_E2E=1 go test -count=1 -v ./hack/e2e/
//
// The lab is dual-stack (unless the kernel has no IPv6): the Node objects
// carry both families, svcproxy gets both pod networks in --cluster-cidr and
// runs both families, and every pod answers on IPv4 and IPv6 (ipv6_test.go
// exercises IPv6 and dual-stack Services; the other tests use IPv4).
//
// One lab (prefix "svpee<pid>", 2 nodes x 3 pods), one control plane and one
// svcproxy per node are shared by all tests of the package and torn down
// when the package's tests end (or on SIGINT/SIGTERM). If the test binary
// dies hard (panic, -timeout), the next run removes the leftovers
// (lab.RunPrefix → lab.DownStale); so does `hack/lab.sh down --prefix
// svpee<pid>`. Logs stay in /tmp/svcproxy-lab-svpee<pid>/logs
// (svcproxy-node<i>.log) and .../cp until the next run.
package e2e
