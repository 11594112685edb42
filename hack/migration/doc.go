// Package migration is the end-to-end test of the kubeadm migration: on
// hack/lab nodes, kubeadm's kube-proxy DaemonSet runs the real kube-proxy
// v1.36.3 image, then svcproxy's image takes over with the same command,
// mounts and privileges (manifests/), and then kube-proxy comes back
// (`svcproxy cleanup` from the image first), while connections are kept
// open and new ones are made through the whole switch.
//
// The test acts as the nodes' kubelet: it reads each DaemonSet from the lab's
// API server and runs its pod with podman inside the node's network
// namespace (see kubelet_test.go for what is translated, and how). It needs
// root, podman, the two images (make image; hack/image.sh kube-proxy) and the
// pinned kube-apiserver, and is behind the "migration" build tag so that
// `go test ./...` does not need images:
//
//	make test-migration
//	# = go test -tags migration -count=1 -v ./hack/migration/
//
// Its lab's prefix is "svpim<pid>"; containers are named
// "svpim<pid>-<pod>". A crashed run's lab and containers go with the next
// run (lab.RunPrefix, lab.RemoveStaleContainers). Logs stay in
// /tmp/svcproxy-lab-svpim<pid>/logs until then.
package migration
