//go:build migration

package migration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// manifestsDir is the deployment the migration test applies: the files
// manifests/kustomization.yaml lists, as `kubectl apply -k manifests/`.
const manifestsDir = "../../manifests"

// kubeadmFile is kubeadm's kube-proxy add-on (see its comment).
const kubeadmFile = "testdata/kubeadm-kube-proxy.yaml"

// readKustomization decodes the files kustomization.yaml lists, in order.
func readKustomization(dir string) ([]runtime.Object, error) {
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	if len(k.Resources) == 0 {
		return nil, fmt.Errorf("%s/kustomization.yaml lists no resources", dir)
	}
	var objs []runtime.Object
	for _, f := range k.Resources {
		o, err := readObjects(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		objs = append(objs, o...)
	}
	return objs, nil
}

// readObjects strictly decodes every document of a YAML file.
func readObjects(file string) ([]runtime.Object, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	dec := scheme.Codecs.UniversalDeserializer()
	var out []runtime.Object
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s (document %d): %w", file, n, err)
		}
		out = append(out, obj)
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

// only returns the single object of type T in objs.
func only[T runtime.Object](objs []runtime.Object) (T, error) {
	var found []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		return zero, fmt.Errorf("want one %T, found %d", zero, len(found))
	}
	return found[0], nil
}

// labConfig is what the lab changes in a kubeadm-shaped ConfigMap, and why.
type labConfig struct {
	server       string // kubeconfig server: the lab's API server (kubeadm: controlPlaneEndpoint)
	clusterCIDRs string // the lab's pod networks (kubeadm: networking.podSubnet)
}

// adaptConfigMap edits the kube-proxy ConfigMap data for the lab, changing
// exactly: config.conf's clusterCIDR (the lab's pod networks, so that
// off-cluster traffic is told apart) and conntrack.maxPerCore (0: inside a
// network namespace nf_conntrack_max is read-only, and a proxy that fails
// to set it exits), and kubeconfig.conf's server (the lab's API server). It
// returns a description of the changes.
func adaptConfigMap(cm *corev1.ConfigMap, lc labConfig) ([]string, error) {
	var conf map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["config.conf"]), &conf); err != nil {
		return nil, fmt.Errorf("ConfigMap %s config.conf: %w", cm.Name, err)
	}
	ct, ok := conf["conntrack"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s config.conf has no conntrack section", cm.Name)
	}
	changes := []string{
		fmt.Sprintf("config.conf clusterCIDR: %v -> %s", conf["clusterCIDR"], lc.clusterCIDRs),
		fmt.Sprintf("config.conf conntrack.maxPerCore: %v -> 0", ct["maxPerCore"]),
	}
	conf["clusterCIDR"] = lc.clusterCIDRs
	ct["maxPerCore"] = 0
	b, err := yaml.Marshal(conf)
	if err != nil {
		return nil, err
	}
	cm.Data["config.conf"] = string(b)

	kc, err := clientcmd.Load([]byte(cm.Data["kubeconfig.conf"]))
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s kubeconfig.conf: %w", cm.Name, err)
	}
	for name, c := range kc.Clusters {
		changes = append(changes, fmt.Sprintf("kubeconfig.conf cluster %s server: %s -> %s", name, c.Server, lc.server))
		c.Server = lc.server
	}
	kb, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, err
	}
	cm.Data["kubeconfig.conf"] = string(kb)
	return changes, nil
}

// apply creates each object, or replaces it if it exists.
func apply(ctx context.Context, cs kubernetes.Interface, objs []runtime.Object) error {
	for _, o := range objs {
		if err := applyOne(ctx, cs, o.DeepCopyObject()); err != nil {
			return err
		}
	}
	return nil
}

func applyOne(ctx context.Context, cs kubernetes.Interface, o runtime.Object) error {
	var err error
	switch v := o.(type) {
	case *corev1.ServiceAccount:
		_, err = cs.CoreV1().ServiceAccounts(v.Namespace).Create(ctx, v, metav1.CreateOptions{})
	case *corev1.ConfigMap:
		_, err = cs.CoreV1().ConfigMaps(v.Namespace).Create(ctx, v, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			_, err = cs.CoreV1().ConfigMaps(v.Namespace).Update(ctx, v, metav1.UpdateOptions{})
		}
	case *rbacv1.ClusterRole:
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, v, metav1.CreateOptions{})
	case *rbacv1.ClusterRoleBinding:
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, v, metav1.CreateOptions{})
	case *appsv1.DaemonSet:
		_, err = cs.AppsV1().DaemonSets(v.Namespace).Create(ctx, v, metav1.CreateOptions{})
	default:
		return fmt.Errorf("apply: %T is not supported", o)
	}
	if apierrors.IsAlreadyExists(err) {
		return nil // identical: the test never changes these
	}
	if err != nil {
		return fmt.Errorf("apply %s: %w", describe(o), err)
	}
	return nil
}

// remove deletes each object (missing ones are fine).
func remove(ctx context.Context, cs kubernetes.Interface, objs []runtime.Object) error {
	var errs []error
	for _, o := range objs {
		var err error
		switch v := o.(type) {
		case *corev1.ServiceAccount:
			err = cs.CoreV1().ServiceAccounts(v.Namespace).Delete(ctx, v.Name, metav1.DeleteOptions{})
		case *corev1.ConfigMap:
			err = cs.CoreV1().ConfigMaps(v.Namespace).Delete(ctx, v.Name, metav1.DeleteOptions{})
		case *rbacv1.ClusterRole:
			err = cs.RbacV1().ClusterRoles().Delete(ctx, v.Name, metav1.DeleteOptions{})
		case *rbacv1.ClusterRoleBinding:
			err = cs.RbacV1().ClusterRoleBindings().Delete(ctx, v.Name, metav1.DeleteOptions{})
		case *appsv1.DaemonSet:
			err = cs.AppsV1().DaemonSets(v.Namespace).Delete(ctx, v.Name, metav1.DeleteOptions{})
		default:
			err = fmt.Errorf("%T is not supported", o)
		}
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s: %w", describe(o), err))
		}
	}
	return errors.Join(errs...)
}

func describe(o runtime.Object) string {
	m, err := metaOf(o)
	if err != nil {
		return fmt.Sprintf("%T", o)
	}
	kind := strings.TrimPrefix(fmt.Sprintf("%T", o), "*")
	if m.GetNamespace() != "" {
		return kind + " " + m.GetNamespace() + "/" + m.GetName()
	}
	return kind + " " + m.GetName()
}

func metaOf(o runtime.Object) (metav1.Object, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no metadata", o)
	}
	return m, nil
}

// clusterCIDRs is the lab's pod networks as config.conf's clusterCIDR.
func clusterCIDRs(l *lab.Lab) string {
	if l.IPv6 {
		return lab.PodNetwork + "," + lab.PodNetwork6
	}
	return lab.PodNetwork
}
