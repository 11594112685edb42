package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// -capture records, on every node, the pod bridge and the conntrack events,
// and every namespace a pod probe starts from; every file is in the logs
// directory, named once, and tcpdump's are bounded in size.
func TestCapturesCoverEveryProbingPodAndNode(t *testing.T) {
	l := &lab.Lab{}
	var nodes []*node
	for i, name := range []string{"node1", "node2"} {
		n := &lab.Node{Name: name, Pods: []lab.Pod{{NS: "t-n" + name[4:] + "-p1", Name: "n" + name[4:] + "-p1"}, {NS: "t-n" + name[4:] + "-p2", Name: "n" + name[4:] + "-p2"}}}
		n.NS = "t-" + name
		l.Nodes = append(l.Nodes, *n)
		nodes = append(nodes, &node{n: n, idx: i})
	}
	s := &soak{l: l, nodes: nodes, probeSvcs: []*probeSvc{{name: "p-web", clusterIP: "203.0.113.20"}, {name: "p-np", nodePort: true, clusterIP: "203.0.113.21"}}}
	for _, nd := range nodes {
		nd.s = s
	}
	dir := "/state/logs"
	caps := captures(nodes, dir)

	byNS := map[string][]capture{}
	names := map[string]bool{}
	for _, c := range caps {
		byNS[c.ns] = append(byNS[c.ns], c)
		if names[c.name] {
			t.Errorf("capture file %s named twice", c.name)
		}
		names[c.name] = true
		if c.argv[0] == "tcpdump" {
			w := slices.Index(c.argv, "-w")
			if w < 0 || c.argv[w+1] != filepath.Join(dir, c.name) {
				t.Errorf("%s: tcpdump does not write %s: %q", c.name, filepath.Join(dir, c.name), c.argv)
			}
			if !slices.Contains(c.argv, "-C") || !slices.Contains(c.argv, "-W") {
				t.Errorf("%s: tcpdump without a size bound (-C, -W): %q", c.name, c.argv)
			}
		}
	}
	for _, tg := range s.targets() {
		if tg.from != "pod" {
			continue
		}
		if !slices.ContainsFunc(byNS[tg.ns], func(c capture) bool { return c.argv[0] == "tcpdump" }) {
			t.Errorf("probes start from %s but nothing records packets there", tg.ns)
		}
	}
	for _, nd := range nodes {
		var bridge, ct bool
		for _, c := range byNS[nd.n.NS] {
			bridge = bridge || c.argv[0] == "tcpdump" && slices.Contains(c.argv, "cbr0")
			ct = ct || c.argv[0] == "conntrack" && strings.Contains(strings.Join(c.argv, " "), "-E")
		}
		if !bridge || !ct {
			t.Errorf("%s: pod bridge recorded %v, conntrack events recorded %v; want both", nd.n.Name, bridge, ct)
		}
	}
}
