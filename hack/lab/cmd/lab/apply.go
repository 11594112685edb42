package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// applyFieldManager owns the fields lab apply sets (server-side apply).
const applyFieldManager = "svcproxy-lab"

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(s string) error { *f = append(*f, s); return nil }

// cmdApply is a small `kubectl apply --server-side -f`: it reads YAML/JSON
// manifests (files, or the *.yaml/*.yml/*.json files of a directory, sorted;
// multi-document files and kustomization.yaml, which is skipped, allowed) and
// server-side applies each object to the lab's API server, creating missing
// namespaces first. A Node's status (addresses) is applied too.
func cmdApply(ctx context.Context, args []string) error {
	var c common
	fs := newFlags("apply", &c)
	var files fileList
	fs.Var(&files, "f", "manifest file or directory (repeatable)")
	dryRun := fs.Bool("dry-run", false, "server-side dry run: validate and admit, persist nothing")
	timeout := fs.Duration("timeout", time.Minute, "overall time limit")
	_ = fs.Parse(args)
	if len(files) == 0 {
		return errors.New("apply: at least one -f is required")
	}
	objs, err := readManifests(files)
	if err != nil {
		return err
	}
	l, err := lab.Load(c.prefix, c.stateDir)
	if err != nil {
		return err
	}
	cp, err := lab.LoadControlPlane(l)
	if err != nil {
		return fmt.Errorf("apply: control plane: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	rc := cp.RESTConfig()
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	opts := metav1.ApplyOptions{FieldManager: applyFieldManager, Force: true}
	suffix := ""
	if *dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
		suffix = " (server dry run)"
	}
	created := map[string]bool{}
	for _, o := range objs {
		u := o.obj
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", o.where, gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		what := strings.ToLower(gvk.Kind) + "/" + u.GetName()
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns := u.GetNamespace()
			if ns == "" {
				ns = metav1.NamespaceDefault
				u.SetNamespace(ns)
			}
			if !*dryRun && !created[ns] {
				if err := ensureNamespace(ctx, cs, ns); err != nil {
					return err
				}
				created[ns] = true
			}
			ri = dyn.Resource(m.Resource).Namespace(ns)
			what = ns + "/" + what
		}
		status, hasStatus := u.Object["status"]
		if _, err := ri.Apply(ctx, u.GetName(), u, opts); err != nil {
			return fmt.Errorf("%s: applying %s: %w", o.where, what, err)
		}
		if hasStatus && status != nil && !*dryRun {
			// Status is a subresource: the apply above ignored it.
			st := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(),
				"metadata": map[string]any{"name": u.GetName(), "namespace": u.GetNamespace()},
				"status":   status,
			}}
			if _, err := ri.ApplyStatus(ctx, u.GetName(), st, opts); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s: applying %s status: %w", o.where, what, err)
			}
		}
		fmt.Printf("%s applied%s\n", what, suffix)
	}
	return nil
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, ns string) error {
	if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	if err == nil {
		fmt.Printf("namespace/%s created\n", ns)
	}
	return nil
}

type manifestObject struct {
	where string // file (document n)
	obj   *unstructured.Unstructured
}

// readManifests reads every object of the given files and directories, in
// order (a directory's files sorted by name, not recursive).
func readManifests(paths []string) ([]manifestObject, error) {
	var files []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, e := range entries {
			switch filepath.Ext(e.Name()) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					names = append(names, e.Name())
				}
			}
		}
		sort.Strings(names)
		for _, n := range names {
			files = append(files, filepath.Join(p, n))
		}
	}
	var out []manifestObject
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for n := 1; ; n++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			where := fmt.Sprintf("%s (document %d)", f, n)
			js, err := yaml.YAMLToJSON(doc)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
				continue
			}
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(js); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if u.GetKind() == "Kustomization" {
				continue
			}
			if u.GetName() == "" {
				return nil, fmt.Errorf("%s: %s without metadata.name", where, u.GetKind())
			}
			out = append(out, manifestObject{where: where, obj: u})
		}
	}
	return out, nil
}
