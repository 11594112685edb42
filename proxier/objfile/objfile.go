// Package objfile reads Services, EndpointSlices and Nodes from YAML or
// JSON files the way kubectl would accept them, for offline rendering
// (svcproxy dump, svcproxy explain -f). (The top-level manifests/ directory
// is something else: svcproxy's own DaemonSet, RBAC and ConfigMap.)
package objfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Objects is what a set of manifests contains.
type Objects struct {
	Services       []*v1.Service
	EndpointSlices []*discovery.EndpointSlice
	Nodes          []*v1.Node
}

// Error locates a problem: file, document number (1-based) and object.
type Error struct {
	File     string
	Document int
	Object   string // "Service default/web", or "" when unknown
	Err      error
}

func (e *Error) Error() string {
	where := fmt.Sprintf("%s: document %d", e.File, e.Document)
	if e.Object != "" {
		where += " (" + e.Object + ")"
	}
	return where + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// strict rejects unknown and duplicate fields, so a typo is an error rather
// than a silently missing setting.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// Load reads path: a file, a directory (its *.yaml, *.yml and *.json files,
// sorted, not recursive), or "-" for stdin. Every problem is reported, each
// naming its file, document and object; nothing is returned on error.
func Load(path string, stdin io.Reader) (*Objects, error) {
	files, err := expand(path)
	if err != nil {
		return nil, err
	}
	objs := &Objects{}
	var errs []error
	for _, f := range files {
		var data []byte
		if f == "-" {
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if f == "-" {
			f = "<stdin>"
		}
		errs = append(errs, objs.addFile(f, data)...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return objs, nil
}

func expand(path string) ([]string, error) {
	if path == "-" {
		return []string{"-"}, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	slices.Sort(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no .yaml, .yml or .json files", path)
	}
	return files, nil
}

func (o *Objects) addFile(file string, data []byte) []error {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var errs []error
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if err == io.EOF {
			return errs
		}
		if err != nil {
			return append(errs, &Error{File: file, Document: doc, Err: err})
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			doc--
			continue
		}
		if err := o.addDocument(raw); err != nil {
			errs = append(errs, &Error{File: file, Document: doc, Object: describe(raw), Err: err})
		}
	}
}

func (o *Objects) addDocument(raw []byte) error {
	obj, gvk, err := strict.Decode(raw, nil, nil)
	if err != nil {
		return err
	}
	switch t := obj.(type) {
	case *v1.Service:
		defaultNamespace(&t.ObjectMeta.Namespace)
		o.Services = append(o.Services, t)
	case *discovery.EndpointSlice:
		defaultNamespace(&t.ObjectMeta.Namespace)
		o.EndpointSlices = append(o.EndpointSlices, t)
	case *v1.Node:
		o.Nodes = append(o.Nodes, t)
	case *v1.List:
		return o.addList(t.Items)
	case *v1.ServiceList:
		for i := range t.Items {
			defaultNamespace(&t.Items[i].Namespace)
			o.Services = append(o.Services, &t.Items[i])
		}
	case *discovery.EndpointSliceList:
		for i := range t.Items {
			defaultNamespace(&t.Items[i].Namespace)
			o.EndpointSlices = append(o.EndpointSlices, &t.Items[i])
		}
	case *v1.NodeList:
		for i := range t.Items {
			o.Nodes = append(o.Nodes, &t.Items[i])
		}
	default:
		return fmt.Errorf("kind %s is not used by svcproxy (want Service, EndpointSlice, Node or a List of them)", gvk.Kind)
	}
	return nil
}

func (o *Objects) addList(items []runtime.RawExtension) error {
	var errs []error
	for i, item := range items {
		if err := o.addDocument(item.Raw); err != nil {
			errs = append(errs, fmt.Errorf("items[%d] (%s): %w", i, describe(item.Raw), err))
		}
	}
	return errors.Join(errs...)
}

func defaultNamespace(ns *string) {
	if *ns == "" {
		*ns = "default"
	}
}

// describe names the object in raw for error messages, best effort.
func describe(raw []byte) string {
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if yaml.Unmarshal(raw, &head) != nil || head.Kind == "" {
		return ""
	}
	name := head.Metadata.Name
	ns := head.Metadata.Namespace
	if ns == "" && (head.Kind == "Service" || head.Kind == "EndpointSlice") {
		ns = "default" // as the object will be read
	}
	if ns != "" {
		name = ns + "/" + name
	}
	return strings.TrimSpace(head.Kind + " " + name)
}

func stripComments(raw []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out.Write(line)
		}
	}
	return out.Bytes()
}
