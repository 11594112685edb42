package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/explain"
	"github.com/svcproxy/svcproxy/proxier/host"
	"github.com/svcproxy/svcproxy/proxier/objfile"
)

// apiTimeout bounds looking a Service up in the API server.
const apiTimeout = 15 * time.Second

// bufferedServices loads the Services of the -f manifests when a Service
// name must be resolved. render reads the manifests again, so stdin ("-")
// is read once here and handed to both.
func (o *explainOptions) bufferedServices(cmd *cobra.Command, dst destination) ([]*v1.Service, error) {
	if dst.ref == nil {
		return nil, nil
	}
	var stdin []byte
	if slices.Contains(o.files, "-") {
		var err error
		if stdin, err = io.ReadAll(cmd.InOrStdin()); err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		cmd.SetIn(bytes.NewReader(stdin))
	}
	var services []*v1.Service
	for _, f := range o.files {
		objs, err := objfile.Load(f, bytes.NewReader(stdin))
		if err != nil {
			return nil, badInput(err)
		}
		services = append(services, objs.Services...)
	}
	return services, nil
}

// saved traces a saved rule file, with the node's routes and addresses
// when given.
func (o *explainOptions) saved(cmd *cobra.Command, p trace.Packet, dst destination) (*explain.Report, error) {
	name := o.rules
	if name == "-" {
		name = "stdin"
	}
	text, err := readFlagFile(cmd, "--rules", o.rules)
	if err != nil {
		return nil, err
	}
	d, err := explain.ParseSaved(name, text)
	if err != nil {
		return nil, err
	}
	s := explain.Saved{Name: name, Rules: d}
	if err := parseFlagFile(cmd, "--routes", o.routes, func(text []byte) (err error) {
		s.Routes, err = host.ParseIPRoute(text)
		return err
	}); err != nil {
		return nil, err
	}
	if err := parseFlagFile(cmd, "--addrs", o.addrs, func(text []byte) (err error) {
		s.Addrs, err = host.ParseIPAddr(text)
		return err
	}); err != nil {
		return nil, err
	}
	if s.NodeIPs, err = parseAddrs("--node-ip", o.nodeIPs); err != nil {
		return nil, badInput(err)
	}
	resolved, sp, err := o.resolve(cmd.Context(), p, dst, func(ref explain.ServiceRef) (explain.ServicePort, error) {
		return explain.ResolveFromComments(ref, trace.DumpChains{Dump: d}, p.Protocol)
	})
	if err != nil {
		return nil, err
	}
	rep, err := explain.ExplainSaved(s, withDst(p, dst, sp))
	if rep != nil {
		rep.Resolved = resolved
	}
	return rep, err
}

// live traces through this node's rules.
func (o *explainOptions) live(cmd *cobra.Command, p trace.Packet, dst destination) (*explain.Report, error) {
	node := explain.ForThisNode()
	family := iptables.IPv4
	if o.ipFamily == "ipv6" || o.ipFamily == "IPv6" {
		family = iptables.IPv6
	}
	resolved, sp, err := o.resolve(cmd.Context(), p, dst, func(ref explain.ServiceRef) (explain.ServicePort, error) {
		return explain.ResolveLive(cmd.Context(), ref, p.Protocol, family, node)
	})
	if err != nil {
		return nil, err
	}
	rep, err := explain.Live(cmd.Context(), withDst(p, dst, sp), node)
	if rep != nil {
		rep.Resolved = resolved
	}
	return rep, err
}

// resolve turns a Service name into its address: through the API server
// with --kubeconfig, else through the rules' comments (fromComments).
// Without a name it does nothing.
func (o *explainOptions) resolve(ctx context.Context, p trace.Packet, dst destination, fromComments func(explain.ServiceRef) (explain.ServicePort, error)) (*explain.Resolved, *explain.ServicePort, error) {
	if dst.ref == nil {
		return nil, nil, nil
	}
	ref := *dst.ref
	if o.kubeconfig == "" {
		sp, err := fromComments(ref)
		if err != nil {
			return nil, nil, fmt.Errorf("--to %s: %w", ref, err)
		}
		return explain.NewResolved(ref, sp, "rule comments"), &sp, nil
	}
	svc, err := serviceFromAPI(ctx, o.kubeconfig, ref)
	if err != nil {
		return nil, nil, err
	}
	family := v1.IPv4Protocol
	if o.ipFamily == "ipv6" || o.ipFamily == "IPv6" {
		family = v1.IPv6Protocol
	}
	sp, err := explain.ResolveService(ref, []*v1.Service{svc}, family, p.Protocol)
	if err != nil {
		return nil, nil, badInput(fmt.Errorf("--to %s: %w", ref, err))
	}
	return explain.NewResolved(ref, sp, "API server"), &sp, nil
}

// serviceFromAPI reads one Service from the API server kubeconfig names.
func serviceFromAPI(ctx context.Context, kubeconfig string, ref explain.ServiceRef) (*v1.Service, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, badInput(fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err))
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, badInput(fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err))
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	svc, err := cs.CoreV1().Services(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, badInput(fmt.Errorf("--to %s: service %s/%s not found in the API server (%s)", ref, ref.Namespace, ref.Name, rc.Host))
	case err != nil:
		return nil, fmt.Errorf("--to %s: reading service %s/%s from %s: %w", ref, ref.Namespace, ref.Name, rc.Host, err)
	}
	return svc, nil
}

// parseFlagFile reads the file a flag names, if it names one, and parses
// it; either failing is bad input naming the flag and file.
func parseFlagFile(cmd *cobra.Command, flag, path string, parse func([]byte) error) error {
	if path == "" {
		return nil
	}
	text, err := readFlagFile(cmd, flag, path)
	if err != nil {
		return err
	}
	if err := parse(text); err != nil {
		return badInput(fmt.Errorf("%s %s: %w", flag, path, err))
	}
	return nil
}

// readFlagFile reads the file a flag names ("-": stdin); a file that cannot
// be read is bad input naming the flag.
func readFlagFile(cmd *cobra.Command, flag, path string) ([]byte, error) {
	var text []byte
	var err error
	if path == "-" {
		text, err = io.ReadAll(cmd.InOrStdin())
	} else {
		text, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, badInput(fmt.Errorf("%s: %w", flag, err))
	}
	return text, nil
}
