//go:build migration

package migration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// The test's kubelet: it turns a DaemonSet's pod template, as the API server
// holds it, into the podman container a kubelet and container runtime would
// run on a node. What it translates, and refuses otherwise:
//   - hostNetwork: true → the container joins the node's network namespace
//     (pods with their own network are not supported);
//   - exactly one container: its image, command (the entrypoint) and args,
//     with $(VAR) references expanded from its env as Kubernetes does;
//   - env: plain values and fieldRef spec.nodeName;
//   - volumeMounts of configMap volumes (the ConfigMap's keys written as
//     files into a directory under the lab's state dir, mounted read-only as
//     kubelet does) and hostPath volumes (FileOrCreate / DirectoryOrCreate
//     create the path on the host first; see prepareHostPath for a missing
//     untyped path);
//   - the service-account token volume kubelet adds to every pod: a token
//     from the TokenRequest API for the pod's serviceAccountName, the API
//     server's CA as ca.crt, and the namespace, at
//     /var/run/secrets/kubernetes.io/serviceaccount;
//   - securityContext: privileged, capabilities add/drop.
// Probes and resources are not enforced: the test checks /healthz itself.

const saMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// podEnv is what the pod needs from the cluster to start on a node.
type podEnv struct {
	lab   *lab.Lab
	cs    kubernetes.Interface
	caPEM []byte // the API server's CA (the SA volume's ca.crt)
}

// containerFor returns the container spec of ds's pod on node n. Files for
// its volumes are written under <StateDir>/pods/<pod>.
func (e *podEnv) containerFor(ctx context.Context, ds *appsv1.DaemonSet, n *lab.Node) (lab.ContainerSpec, error) {
	pod := ds.Spec.Template.Spec
	podName := ds.Name + "-" + n.Name
	fail := func(format string, args ...any) (lab.ContainerSpec, error) {
		return lab.ContainerSpec{}, fmt.Errorf("daemonset %s/%s: %s", ds.Namespace, ds.Name, fmt.Sprintf(format, args...))
	}
	if !pod.HostNetwork {
		return fail("only hostNetwork pods run in the lab")
	}
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		return fail("want exactly one container, have %d (+%d init)", len(pod.Containers), len(pod.InitContainers))
	}
	c := pod.Containers[0]
	env, err := containerEnv(c, n)
	if err != nil {
		return fail("container %s: %v", c.Name, err)
	}
	spec := lab.ContainerSpec{
		Name:  podName,
		Image: c.Image,
		NS:    n.NS,
		Env:   envList(c, env),
	}
	if c.Command != nil {
		spec.Entrypoint = expandAll(c.Command, env)
	}
	if c.Args != nil {
		spec.Args = expandAll(c.Args, env)
	}
	if sc := c.SecurityContext; sc != nil {
		spec.Privileged = ptr.Deref(sc.Privileged, false)
		if caps := sc.Capabilities; caps != nil {
			for _, a := range caps.Add {
				spec.CapAdd = append(spec.CapAdd, string(a))
			}
			for _, d := range caps.Drop {
				spec.CapDrop = append(spec.CapDrop, string(d))
			}
		}
	}
	dir := filepath.Join(e.lab.StateDir, "pods", podName)
	if err := os.RemoveAll(dir); err != nil {
		return lab.ContainerSpec{}, err
	}
	for _, vm := range c.VolumeMounts {
		m, err := e.mountFor(ctx, ds.Namespace, pod.Volumes, vm, dir)
		if err != nil {
			return fail("container %s: volume mount %s: %v", c.Name, vm.Name, err)
		}
		spec.Mounts = append(spec.Mounts, m)
	}
	if ptr.Deref(pod.AutomountServiceAccountToken, true) {
		m, err := e.serviceAccountMount(ctx, ds.Namespace, pod.ServiceAccountName, filepath.Join(dir, "serviceaccount"))
		if err != nil {
			return fail("%v", err)
		}
		spec.Mounts = append(spec.Mounts, m)
	}
	return spec, nil
}

// containerEnv resolves the container's env (values and spec.nodeName).
func containerEnv(c corev1.Container, n *lab.Node) (map[string]string, error) {
	env := map[string]string{}
	if len(c.EnvFrom) > 0 {
		return nil, errors.New("envFrom is not supported")
	}
	for _, v := range c.Env {
		switch {
		case v.ValueFrom == nil:
			env[v.Name] = expand(v.Value, env)
		case v.ValueFrom.FieldRef != nil && v.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			env[v.Name] = n.Name
		default:
			return nil, fmt.Errorf("env %s: only values and fieldRef spec.nodeName are supported", v.Name)
		}
	}
	return env, nil
}

// envList is env as KEY=VALUE, in the container's order.
func envList(c corev1.Container, env map[string]string) []string {
	var out []string
	for _, v := range c.Env {
		out = append(out, v.Name+"="+env[v.Name])
	}
	return out
}

// expand replaces $(NAME) by env's NAME, as Kubernetes expands command,
// args and env values: $$ is a literal $, and an unknown $(NAME) stays.
func expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+end+1])
			}
			i += end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func expandAll(in []string, env map[string]string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, env)
	}
	return out
}

// mountFor returns the bind mount for one volumeMount.
func (e *podEnv) mountFor(ctx context.Context, ns string, vols []corev1.Volume, vm corev1.VolumeMount, dir string) (lab.Mount, error) {
	if vm.SubPath != "" || vm.SubPathExpr != "" {
		return lab.Mount{}, errors.New("subPath is not supported")
	}
	i := slices.IndexFunc(vols, func(v corev1.Volume) bool { return v.Name == vm.Name })
	if i < 0 {
		return lab.Mount{}, errors.New("no such volume in the pod")
	}
	v := vols[i]
	switch {
	case v.ConfigMap != nil:
		src := filepath.Join(dir, "volumes", v.Name)
		if err := e.writeConfigMap(ctx, ns, v.ConfigMap, src); err != nil {
			return lab.Mount{}, err
		}
		// kubelet mounts configMap volumes read-only whatever the mount says.
		return lab.Mount{Source: src, Target: vm.MountPath, ReadOnly: true}, nil
	case v.HostPath != nil:
		src, err := prepareHostPath(v.HostPath, filepath.Join(dir, "missing", v.Name))
		if err != nil {
			return lab.Mount{}, err
		}
		return lab.Mount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly}, nil
	default:
		return lab.Mount{}, fmt.Errorf("volume %s: only configMap and hostPath volumes are supported", v.Name)
	}
}

// writeConfigMap writes the ConfigMap's keys (or its items) as files in dir.
func (e *podEnv) writeConfigMap(ctx context.Context, ns string, src *corev1.ConfigMapVolumeSource, dir string) error {
	cm, err := e.cs.CoreV1().ConfigMaps(ns).Get(ctx, src.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("configMap %s/%s: %w", ns, src.Name, err)
	}
	files := map[string]string{}
	if len(src.Items) == 0 {
		for k, v := range cm.Data {
			files[k] = v
		}
	}
	for _, it := range src.Items {
		v, ok := cm.Data[it.Key]
		if !ok {
			return fmt.Errorf("configMap %s/%s has no key %s", ns, src.Name, it.Key)
		}
		files[it.Path] = v
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// prepareHostPath does what kubelet does for a hostPath volume's type and
// returns the path to mount. An untyped path that does not exist is created
// by the container runtime (containerd makes the directory); here an empty
// directory under the pod's own dir stands in for it, so that the test
// creates nothing in the host's system directories (this machine has no
// /lib/modules).
func prepareHostPath(h *corev1.HostPathVolumeSource, standIn string) (string, error) {
	switch t := ptr.Deref(h.Type, corev1.HostPathUnset); t {
	case corev1.HostPathUnset:
		if _, err := os.Stat(h.Path); errors.Is(err, os.ErrNotExist) {
			return standIn, os.MkdirAll(standIn, 0o755)
		}
		return h.Path, nil
	case corev1.HostPathDirectory, corev1.HostPathFile:
		_, err := os.Stat(h.Path)
		return h.Path, err
	case corev1.HostPathFileOrCreate:
		f, err := os.OpenFile(h.Path, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return "", err
		}
		return h.Path, f.Close()
	case corev1.HostPathDirectoryOrCreate:
		return h.Path, os.MkdirAll(h.Path, 0o755)
	default:
		return "", fmt.Errorf("hostPath type %s is not supported", t)
	}
}

// serviceAccountMount writes the pod's service-account volume into dir:
// a bound token for sa (TokenRequest, one hour), ca.crt and namespace.
func (e *podEnv) serviceAccountMount(ctx context.Context, ns, sa, dir string) (lab.Mount, error) {
	if sa == "" {
		sa = "default"
	}
	tr, err := e.cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return lab.Mount{}, fmt.Errorf("token for service account %s/%s: %w", ns, sa, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return lab.Mount{}, err
	}
	for name, data := range map[string][]byte{"token": []byte(tr.Status.Token), "ca.crt": e.caPEM, "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return lab.Mount{}, err
		}
	}
	return lab.Mount{Source: dir, Target: saMountPath, ReadOnly: true}, nil
}
