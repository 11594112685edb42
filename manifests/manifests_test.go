// Package manifests_test checks the deployment manifests in this directory
// (not examples/): every object decodes strictly with client-go's scheme,
// kustomization.yaml lists exactly the manifests, the DaemonSet keeps
// kube-proxy's kubeadm invariants, the ClusterRole is least-privilege, and
// the ConfigMap's config.conf loads with svcproxy's own config loader.
package manifests_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/svcproxy/svcproxy/cmd/svcproxy/options"
)

const (
	kustomizationFile = "kustomization.yaml"
	configDir         = "/var/lib/kube-proxy" // kubeadm's mount point
	configKey         = "config.conf"
	kubeconfigKey     = "kubeconfig.conf"
	xtablesLock       = "/run/xtables.lock"
	healthzPort       = 10256
	saTokenFile       = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	saCAFile          = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// kubeadm's kube-proxy command line.
var kubeadmCommand = []string{
	"/usr/local/bin/kube-proxy",
	"--config=" + configDir + "/" + configKey,
	"--hostname-override=$(NODE_NAME)",
}

// allowedGroups are the API groups a deployment manifest may use.
var allowedGroups = map[string]bool{"": true, "apps": true, "rbac.authorization.k8s.io": true}

// object is one decoded document.
type object struct {
	file string
	doc  int
	obj  runtime.Object
}

func (o object) String() string { return fmt.Sprintf("%s (document %d)", o.file, o.doc) }

// manifestFiles lists the *.yaml / *.yml files directly in this directory,
// kustomization.yaml included.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if ext := filepath.Ext(e.Name()); ext == ".yaml" || ext == ".yml" {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no manifests found")
	}
	return files
}

// splitDocuments splits a multi-document YAML file, dropping empty documents
// (comments only).
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
			continue
		}
		docs = append(docs, doc)
	}
}

// decodeAll strictly decodes every document of every manifest except
// kustomization.yaml. Unknown fields, duplicate fields and kinds outside
// core, apps and rbac are errors.
func decodeAll(t *testing.T) []object {
	t.Helper()
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	dec := codecs.UniversalDeserializer()
	var objs []object
	for _, f := range manifestFiles(t) {
		if f == kustomizationFile {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := splitDocuments(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(docs) == 0 {
			t.Errorf("%s: no objects", f)
		}
		for i, doc := range docs {
			obj, gvk, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s (document %d): strict decode: %v", f, i+1, err)
				continue
			}
			if !allowedGroups[gvk.Group] {
				t.Errorf("%s (document %d): %s is outside the core, apps and rbac groups", f, i+1, gvk)
				continue
			}
			objs = append(objs, object{file: f, doc: i + 1, obj: obj})
		}
	}
	return objs
}

// only returns the single object of type T, failing the test otherwise.
func only[T runtime.Object](t *testing.T, objs []object) T {
	t.Helper()
	var found []T
	var where []string
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			found = append(found, v)
			where = append(where, o.String())
		}
	}
	var zero T
	if len(found) != 1 {
		t.Fatalf("want exactly one %T in the manifests, found %d: %v", zero, len(found), where)
	}
	return found[0]
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := decodeAll(t)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[fmt.Sprintf("%T", o.obj)]++
	}
	for _, want := range []runtime.Object{
		&corev1.ServiceAccount{}, &rbacv1.ClusterRole{}, &rbacv1.ClusterRoleBinding{},
		&corev1.ConfigMap{}, &appsv1.DaemonSet{},
	} {
		if k := fmt.Sprintf("%T", want); kinds[k] != 1 {
			t.Errorf("want one %s, found %d", k, kinds[k])
		}
	}
	// Namespaced objects live in kube-system, as kube-proxy does.
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *corev1.ServiceAccount:
			checkNamespace(t, o, v.Namespace)
		case *corev1.ConfigMap:
			checkNamespace(t, o, v.Namespace)
		case *appsv1.DaemonSet:
			checkNamespace(t, o, v.Namespace)
		}
	}
}

func checkNamespace(t *testing.T, o object, ns string) {
	t.Helper()
	if ns != metav1.NamespaceSystem {
		t.Errorf("%s: namespace %q, want %q", o, ns, metav1.NamespaceSystem)
	}
}

// kustomization is the part of a Kustomization the deployment uses; any
// other field is an error (strict decoding), so nothing slips in unchecked.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	data, err := os.ReadFile(kustomizationFile)
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s: %v", kustomizationFile, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s: apiVersion/kind %s/%s, want kustomize.config.k8s.io/v1beta1/Kustomization", kustomizationFile, k.APIVersion, k.Kind)
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		if listed[r] {
			t.Errorf("%s: %s listed twice", kustomizationFile, r)
		}
		listed[r] = true
		clean := path.Clean(r)
		if clean != r || strings.Contains(r, "/") {
			t.Errorf("%s: resource %q must be a file in manifests/ itself (examples/ is not deployed)", kustomizationFile, r)
			continue
		}
		if fi, err := os.Stat(r); err != nil {
			t.Errorf("%s: resource %q: %v", kustomizationFile, r, err)
		} else if fi.IsDir() {
			t.Errorf("%s: resource %q is a directory", kustomizationFile, r)
		}
	}
	for _, f := range manifestFiles(t) {
		if f != kustomizationFile && !listed[f] {
			t.Errorf("%s is not listed in %s", f, kustomizationFile)
		}
	}
}

func TestDaemonSetInvariants(t *testing.T) {
	objs := decodeAll(t)
	ds := only[*appsv1.DaemonSet](t, objs)
	sa := only[*corev1.ServiceAccount](t, objs)
	cm := only[*corev1.ConfigMap](t, objs)
	spec := ds.Spec.Template.Spec

	if !spec.HostNetwork {
		t.Error("hostNetwork must be true: the proxy programs the node's network namespace")
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical", spec.PriorityClassName)
	}
	if spec.ServiceAccountName != sa.Name {
		t.Errorf("serviceAccountName %q, want the manifests' ServiceAccount %q", spec.ServiceAccountName, sa.Name)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	}) {
		t.Errorf("tolerations %+v: want one {operator: Exists} tolerating every taint", spec.Tolerations)
	}
	if us := ds.Spec.UpdateStrategy; us.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
		us.RollingUpdate == nil || us.RollingUpdate.MaxUnavailable == nil || us.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("updateStrategy %+v: want RollingUpdate with maxUnavailable 1", us)
	}
	sel := ds.Spec.Selector
	if sel == nil || len(sel.MatchLabels) == 0 {
		t.Error("selector must have matchLabels")
	} else {
		for k, v := range sel.MatchLabels {
			if ds.Spec.Template.Labels[k] != v {
				t.Errorf("selector %s=%s does not match the pod template labels %v", k, v, ds.Spec.Template.Labels)
			}
		}
	}

	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	if !slices.Equal(c.Command, kubeadmCommand) || len(c.Args) != 0 {
		t.Errorf("command %q args %q, want kubeadm's %q", c.Command, c.Args, kubeadmCommand)
	}
	if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
		t.Errorf("image %q must carry a version tag", c.Image)
	}

	// NODE_NAME from the downward API, for --hostname-override.
	if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "NODE_NAME" }); i < 0 {
		t.Error("env NODE_NAME missing")
	} else if e := c.Env[i]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("env NODE_NAME must come from fieldRef spec.nodeName, have %+v", e)
	}

	// Privileged, or at least NET_ADMIN.
	sc := c.SecurityContext
	privileged := sc != nil && sc.Privileged != nil && *sc.Privileged
	netAdmin := sc != nil && sc.Capabilities != nil && slices.Contains(sc.Capabilities.Add, "NET_ADMIN")
	if !privileged && !netAdmin {
		t.Error("securityContext must be privileged or add NET_ADMIN")
	}

	// Probes on the healthz port.
	for name, p := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
		switch {
		case p == nil || p.HTTPGet == nil:
			t.Errorf("%s must be an httpGet probe", name)
		case p.HTTPGet.Port.IntValue() != healthzPort:
			t.Errorf("%s port %s, want %d", name, p.HTTPGet.Port.String(), healthzPort)
		case p.HTTPGet.Path != "/livez" && p.HTTPGet.Path != "/healthz":
			t.Errorf("%s path %q, want /livez or /healthz", name, p.HTTPGet.Path)
		}
	}
	if len(c.Resources.Requests) == 0 {
		t.Error("resources.requests must be set")
	}

	// Volumes: the ConfigMap at kubeadm's path, the xtables lock, modules.
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
		if _, ok := volumes[m.Name]; !ok {
			t.Errorf("volumeMount %s refers to no volume %q", m.MountPath, m.Name)
		}
	}
	if m, ok := mounts[configDir]; !ok {
		t.Errorf("nothing mounted at %s", configDir)
	} else if v := volumes[m.Name]; v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
		t.Errorf("%s must mount the ConfigMap %q, has %+v", configDir, cm.Name, v.VolumeSource)
	} else if m.SubPath != "" {
		t.Errorf("%s must mount the whole ConfigMap (no subPath)", configDir)
	}
	if m, ok := mounts[xtablesLock]; !ok {
		t.Errorf("nothing mounted at %s", xtablesLock)
	} else if v := volumes[m.Name]; v.HostPath == nil || v.HostPath.Path != xtablesLock ||
		v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathFileOrCreate {
		t.Errorf("%s must be hostPath %s type FileOrCreate, has %+v", xtablesLock, xtablesLock, v.VolumeSource)
	} else if m.ReadOnly {
		t.Errorf("%s must be writable (iptables takes the lock)", xtablesLock)
	}
	if m, ok := mounts["/lib/modules"]; !ok {
		t.Error("nothing mounted at /lib/modules")
	} else if v := volumes[m.Name]; v.HostPath == nil || v.HostPath.Path != "/lib/modules" || !m.ReadOnly {
		t.Errorf("/lib/modules must be a read-only hostPath mount, has %+v readOnly=%v", v.VolumeSource, m.ReadOnly)
	}
}

func TestClusterRoleIsLeastPrivilege(t *testing.T) {
	objs := decodeAll(t)
	role := only[*rbacv1.ClusterRole](t, objs)
	binding := only[*rbacv1.ClusterRoleBinding](t, objs)
	sa := only[*corev1.ServiceAccount](t, objs)

	want := map[string][]string{
		"/services":                       {"get", "list", "watch"},
		"/nodes":                          {"get", "list", "watch"},
		"discovery.k8s.io/endpointslices": {"get", "list", "watch"},
		"/events":                         {"create", "patch", "update"},
		"events.k8s.io/events":            {"create", "patch", "update"},
	}
	got := map[string][]string{}
	if role.AggregationRule != nil {
		t.Error("the ClusterRole must not aggregate other roles")
	}
	for i, r := range role.Rules {
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			t.Errorf("rule %d: nonResourceURLs/resourceNames are not expected: %+v", i, r)
		}
		for _, s := range slices.Concat(r.APIGroups, r.Resources, r.Verbs) {
			if strings.Contains(s, "*") {
				t.Errorf("rule %d: wildcard %q", i, s)
			}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				if strings.Contains(res, "secret") {
					t.Errorf("rule %d: grants access to %s", i, res)
				}
				key := g + "/" + res
				got[key] = append(got[key], r.Verbs...)
			}
		}
	}
	for k := range got {
		slices.Sort(got[k])
		got[k] = slices.Compact(got[k])
	}
	for k, verbs := range want {
		if !slices.Equal(got[k], verbs) {
			t.Errorf("%s: verbs %v, want %v", k, got[k], verbs)
		}
	}
	for k, verbs := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected grant %v", k, verbs)
		}
	}

	if binding.RoleRef.Kind != "ClusterRole" || binding.RoleRef.Name != role.Name || binding.RoleRef.APIGroup != rbacv1.GroupName {
		t.Errorf("ClusterRoleBinding roleRef %+v, want ClusterRole %s", binding.RoleRef, role.Name)
	}
	if len(binding.Subjects) != 1 || binding.Subjects[0].Kind != rbacv1.ServiceAccountKind ||
		binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("ClusterRoleBinding subjects %+v, want only ServiceAccount %s/%s", binding.Subjects, sa.Namespace, sa.Name)
	}
}

func TestConfigMapLoadsWithSvcproxy(t *testing.T) {
	objs := decodeAll(t)
	cm := only[*corev1.ConfigMap](t, objs)
	ds := only[*appsv1.DaemonSet](t, objs)

	conf, ok := cm.Data[configKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s key", cm.Name, configKey)
	}
	dir := t.TempDir()
	confPath := filepath.Join(dir, configKey)
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, warnings, err := options.LoadConfigFile(confPath)
	if err != nil {
		t.Fatalf("%s does not load: %v", configKey, err)
	}
	for _, w := range warnings {
		t.Errorf("%s: unexpected warning: %s", configKey, w)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("%s does not validate: %v", configKey, err)
	}
	if want := configDir + "/" + kubeconfigKey; cfg.Kubeconfig != want {
		t.Errorf("clientConnection.kubeconfig %q, want %q (the ConfigMap's %s key)", cfg.Kubeconfig, want, kubeconfigKey)
	}
	if len(cfg.ClusterCIDRs) == 0 {
		t.Error("clusterCIDR is empty: svcproxy could not tell pod traffic from outside traffic")
	}
	if cfg.Mode != options.ModeIPTables {
		t.Errorf("mode %q, want %q", cfg.Mode, options.ModeIPTables)
	}
	if want := fmt.Sprintf("0.0.0.0:%d", healthzPort); cfg.HealthzBindAddress != want {
		t.Errorf("healthz address %q, want %q (the probes' port)", cfg.HealthzBindAddress, want)
	}

	// kubeconfig.conf: the pod's service account token, as kubeadm's.
	kc, ok := cm.Data[kubeconfigKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s key", cm.Name, kubeconfigKey)
	}
	k, err := clientcmd.Load([]byte(kc))
	if err != nil {
		t.Fatalf("%s: %v", kubeconfigKey, err)
	}
	ctx, ok := k.Contexts[k.CurrentContext]
	if !ok {
		t.Fatalf("%s: current context %q missing", kubeconfigKey, k.CurrentContext)
	}
	if cl := k.Clusters[ctx.Cluster]; cl == nil || cl.CertificateAuthority != saCAFile || !strings.HasPrefix(cl.Server, "https://") {
		t.Errorf("%s: cluster %+v, want an https server and certificate-authority %s", kubeconfigKey, cl, saCAFile)
	}
	if u := k.AuthInfos[ctx.AuthInfo]; u == nil || u.TokenFile != saTokenFile {
		t.Errorf("%s: user %+v, want tokenFile %s", kubeconfigKey, u, saTokenFile)
	}

	// The DaemonSet's command line, through svcproxy's own flag parsing,
	// with the file where the container would see it.
	c := ds.Spec.Template.Spec.Containers[0]
	args := slices.Clone(c.Command[1:])
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "$(NODE_NAME)", "Node-A")
		if strings.HasPrefix(a, "--config=") {
			args[i] = "--config=" + confPath
		}
	}
	o := options.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("svcproxy rejects the DaemonSet's flags %q: %v", args, err)
	}
	if err := o.Complete(fs); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if len(o.Warnings) > 0 {
		t.Errorf("unexpected warnings: %q", o.Warnings)
	}
	if name, err := o.Config.NodeName(); err != nil || name != "node-a" {
		t.Errorf("node name %q (%v), want node-a from --hostname-override", name, err)
	}
}
