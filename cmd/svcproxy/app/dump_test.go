package app

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func runMain(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDumpExamples(t *testing.T) {
	code, out, errOut := runMain(t, "", "dump", "-f", "../../../manifests/examples", "--node-name", "node1", "--cluster-cidr", "198.51.100.0/24")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"*filter", "*nat", "COMMIT",
		`-A KUBE-SERVICES -m comment --comment "demo/web:http cluster IP" -m tcp -p tcp -d 203.0.113.10 --dport 80 -j KUBE-SVC-`,
		`-A KUBE-NODEPORTS -m comment --comment demo/shop:http -m tcp -p tcp --dport 30080 -j KUBE-EXT-`,
		`-m udp -p udp -d 203.0.113.53 --dport 53`,
		`"demo/empty:http has no endpoints" -m tcp -p tcp -d 203.0.113.30 --dport 80 -j REJECT`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dump lacks %q", want)
		}
	}
}

func TestDumpFromStdinJSONList(t *testing.T) {
	list := `{"apiVersion":"v1","kind":"List","items":[
	 {"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"x"},"spec":{"clusterIP":"203.0.113.7","ports":[{"name":"p","port":81}]}}]}`
	code, out, errOut := runMain(t, list, "dump", "-f", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, `"x/a:p has no endpoints"`) {
		t.Errorf("service from a JSON List on stdin not rendered:\n%s", out)
	}
}

func TestDumpBadInput(t *testing.T) {
	cases := []struct {
		name    string
		content string
		args    []string
		want    []string // all must appear in stderr
	}{
		{name: "unknown field", content: "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  clusterIP: 203.0.113.10\n  portz: []\n",
			want: []string{"bad.yaml", "document 1", "Service demo/web", `unknown field "spec.portz"`}},
		{name: "bad protocol", content: "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  clusterIP: 203.0.113.10\n  ports: [{name: http, port: 80, protocol: ICMP}]\n",
			want: []string{"Service demo/web", "spec.ports[0].protocol", `"ICMP"`}},
		{name: "bad cluster IP", content: "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: 203.0.113.999\n  ports: [{port: 80}]\n",
			want: []string{"Service default/web", "spec.clusterIPs", "203.0.113.999"}},
		{name: "port out of range", content: "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: 203.0.113.9\n  ports: [{port: 70000}]\n",
			want: []string{"spec.ports[0].port", "70000"}},
		{name: "bad endpoint address", content: "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s1, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [not-an-ip]}]\n",
			want: []string{"EndpointSlice default/s1", "endpoints[0].addresses[0]", "not-an-ip"}},
		{name: "second document broken", content: "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\nspec: {clusterIP: 203.0.113.9, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec: {clusterIP: [1]}\n",
			want: []string{"document 2", "Service default/broken"}},
		{name: "unsupported kind", content: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
			want: []string{"kind ConfigMap is not used by svcproxy"}},
		{name: "not yaml", content: "{{{{",
			want: []string{"bad.yaml"}},
		{name: "bad flag value", content: "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\nspec: {clusterIP: 203.0.113.9, ports: [{port: 80}]}\n",
			args: []string{"--cluster-cidr", "198.51.100.0/33", "--masquerade-bit", "40"},
			want: []string{`--cluster-cidr: "198.51.100.0/33" is not a CIDR`, "--masquerade-bit: 40 is out of range 0..31"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, "bad.yaml", c.content)
			code, out, errOut := runMain(t, "", append([]string{"dump", "-f", path}, c.args...)...)
			if code != 2 {
				t.Errorf("exit code %d, want 2 (stderr: %s)", code, errOut)
			}
			if out != "" {
				t.Errorf("stdout must be empty on bad input, got:\n%s", out)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

func TestUnknownFlagIsBadInput(t *testing.T) {
	code, _, errOut := runMain(t, "", "dump", "-f", "x", "--no-such-flag")
	if code != 2 || !strings.Contains(errOut, "no-such-flag") {
		t.Fatalf("exit %d, stderr %q; want 2 naming the flag", code, errOut)
	}
}

func TestMissingFile(t *testing.T) {
	code, out, errOut := runMain(t, "", "dump", "-f", "/nonexistent/dir/x.yaml")
	if code != 2 || out != "" || !strings.Contains(errOut, "/nonexistent/dir/x.yaml") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestDumpPodEgressAndDetectLocal(t *testing.T) {
	svc := `{"apiVersion":"v1","kind":"List","items":[
	 {"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"x"},"spec":{"clusterIP":"203.0.113.7","ports":[{"name":"p","port":81}]}},
	 {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"a-1","namespace":"x","labels":{"kubernetes.io/service-name":"a"}},
	  "addressType":"IPv4","ports":[{"name":"p","port":8080}],"endpoints":[{"addresses":["198.51.100.66"]}]}]}`
	egress := `-A SVCPROXY-POD-EGRESS -m comment --comment "pod egress leaves the pod network through the node address" ` +
		`-m set --match-set SVCPROXY-POD-CIDRS src -m set ! --match-set SVCPROXY-POD-CIDRS dst -m set ! --match-set SVCPROXY-NO-MASQ dst -j MASQUERADE --random-fully`
	for _, tc := range []struct {
		args    []string
		want    []string
		notWant []string
	}{
		{args: []string{"--cluster-cidr", "198.51.100.0/26,198.51.100.192/26,198.51.100.64/26", "--masquerade-pod-egress", "--no-masquerade-cidrs", "192.0.2.128/25", "--jumps"},
			want: []string{egress, "-m set ! --match-set SVCPROXY-POD-CIDRS src -j KUBE-MARK-MASQ",
				`-A POSTROUTING -m comment --comment "svcproxy pod egress masquerade" -j SVCPROXY-POD-EGRESS`}},
		{args: []string{"--cluster-cidr", "198.51.100.0/24"},
			want: []string{"! -s 198.51.100.0/24 -j KUBE-MARK-MASQ"}, notWant: []string{"SVCPROXY-POD-EGRESS", "--match-set"}},
		{args: []string{"--cluster-cidr", "198.51.100.0/24", "--detect-local-mode", "BridgeInterface", "--pod-bridge-interface", "cbr0"},
			want: []string{"! -i cbr0 -j KUBE-MARK-MASQ"}, notWant: []string{"198.51.100.0/24"}},
		{args: []string{"--detect-local-mode", "InterfaceNamePrefix", "--pod-interface-name-prefix", "veth"},
			want: []string{"! -i veth+ -j KUBE-MARK-MASQ"}},
		{args: []string{"--ip-family", "ipv6", "--cluster-cidr", "2001:db8:1::/48,2001:db8:2::/48,198.51.100.0/24"},
			want: []string{"-m set ! --match-set SVCPROXY-POD-CIDRS6 src"}},
	} {
		args := append([]string{"dump", "-f", "-"}, tc.args...)
		in := svc
		if slices.Contains(tc.args, "ipv6") {
			in = strings.NewReplacer("203.0.113.7", "2001:db8:ffff::7", "198.51.100.66", "2001:db8:2::66", "IPv4", "IPv6").Replace(svc)
		}
		code, out, errOut := runMain(t, in, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: dump lacks %q:\n%s", tc.args, w, out)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(out, w) {
				t.Errorf("%v: dump has %q:\n%s", tc.args, w, out)
			}
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		// The same checks as the daemon's (nodeconfig.Settings.Validate), in
		// its words, naming dump's flags.
		{[]string{"--masquerade-pod-egress"}, "--masquerade-pod-egress needs the pod network: --cluster-cidr must list at least one CIDR"},
		{[]string{"--cluster-cidr", "2001:db8::/64", "--masquerade-pod-egress"}, "--masquerade-pod-egress needs --cluster-cidr (of the --ip-family)"},
		{[]string{"--detect-local-mode", "BridgeInterface"}, "requires the bridge name: --pod-bridge-interface must not be empty"},
		{[]string{"--detect-local-mode", "PodCIDR"}, `--detect-local-mode: "PodCIDR" must be one of`},
		{[]string{"--cluster-cidr", "198.51.100.0/24", "--masquerade-pod-egress", "--no-masquerade-cidrs", "192.0.2.300/25"}, `--no-masquerade-cidrs: "192.0.2.300/25" is not a CIDR`},
	} {
		code, out, errOut := runMain(t, svc, append([]string{"dump", "-f", "-"}, tc.args...)...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

// dualStackNodePort is one NodePort Service of both families.
const dualStackNodePort = `apiVersion: v1
kind: Service
metadata: {name: np, namespace: demo}
spec:
  type: NodePort
  clusterIPs: [203.0.113.9, "2001:db8:5::9"]
  ipFamilies: [IPv4, IPv6]
  ports: [{name: http, port: 80, nodePort: 30009}]
`

// --nodeport-addresses with addresses of both families: each family's rules
// get only their own (issue 8); none of the family means every local
// address, as kube-proxy's nodePortAddresses.
func TestDumpNodePortAddressesPerFamily(t *testing.T) {
	svc := dualStackNodePort
	const jump = " -j KUBE-NODEPORTS"
	for _, tc := range []struct {
		family, addrs string
		want, notWant []string
	}{
		{"ipv4", "192.0.2.11,2001:db8::11", []string{"-d 192.0.2.11" + jump}, []string{"2001:db8::11"}},
		{"ipv6", "192.0.2.11,2001:db8::11", []string{"-d 2001:db8::11" + jump}, []string{"192.0.2.11"}},
		{"ipv6", "192.0.2.11", []string{"-m addrtype --dst-type LOCAL ! -d ::1/128" + jump}, []string{"192.0.2.11"}},
	} {
		code, out, errOut := runMain(t, svc, "dump", "-f", "-", "--ip-family", tc.family, "--nodeport-addresses", tc.addrs)
		if code != 0 {
			t.Fatalf("%s %s: exit %d: %s", tc.family, tc.addrs, code, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s %s: dump lacks %q:\n%s", tc.family, tc.addrs, w, out)
			}
		}
		for _, nw := range tc.notWant {
			if strings.Contains(out, nw) {
				t.Errorf("%s %s: dump mentions the other family's %q:\n%s", tc.family, tc.addrs, nw, out)
			}
		}
	}
}

// explain's -f mode builds its node from the same flags: with addresses of
// both families in --nodeport-addresses, an IPv6 packet meets only the
// IPv6 ones (and the IPv4 rules never see an IPv6 address).
func TestExplainNodePortAddressesPerFamily(t *testing.T) {
	svc := dualStackNodePort + `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: np-6, namespace: demo, labels: {kubernetes.io/service-name: np}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["2001:db8:6::2"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: np-4, namespace: demo, labels: {kubernetes.io/service-name: np}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["198.51.100.2"]}]
`
	for _, tc := range []struct{ family, from, to, want string }{
		{"ipv6", "2001:db8:99::1", "[2001:db8::11]:30009", "reaches 1 endpoint of demo/np:http ([2001:db8:6::2]:8080)"},
		{"ipv4", "203.0.113.200", "192.0.2.11:30009", "reaches 1 endpoint of demo/np:http (198.51.100.2:8080)"},
		{"ipv6", "2001:db8:99::1", "[2001:db8::12]:30009", "no service matched"},
	} {
		code, out, errOut := runMain(t, svc, "explain", "-f", "-", "--node-name", "node1", "--ip-family", tc.family,
			"--from", tc.from, "--nodeport-addresses", "192.0.2.11,2001:db8::11", "--to", tc.to)
		if !strings.Contains(out, tc.want) {
			t.Errorf("explain --to %s: exit %d, want %q in:\n%s%s", tc.to, code, tc.want, out, errOut)
		}
	}
}

// --sorted prints the same lines, declarations first and chains in name
// order, for reading.
func TestDumpSorted(t *testing.T) {
	args := []string{"dump", "-f", "../../../manifests/examples", "--node-name", "node1", "--cluster-cidr", "198.51.100.0/24", "--jumps"}
	code, plain, errOut := runMain(t, "", args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	code, sorted, errOut := runMain(t, "", append(args, "--sorted")...)
	if code != 0 {
		t.Fatalf("--sorted: exit %d: %s", code, errOut)
	}
	lines := func(s string) []string { l := strings.Split(s, "\n"); slices.Sort(l); return l }
	if !slices.Equal(lines(plain), lines(sorted)) {
		t.Fatal("--sorted changed the lines, not only their order")
	}
	for _, table := range strings.Split(sorted, "COMMIT\n") {
		var decls, chains []string
		sawRule := false
		for _, l := range strings.Split(table, "\n") {
			switch {
			case strings.HasPrefix(l, ":"):
				if sawRule {
					t.Fatalf("declaration %q after a rule", l)
				}
				decls = append(decls, l)
			case strings.HasPrefix(l, "-A "):
				sawRule = true
				if c := strings.Fields(l)[1]; len(chains) == 0 || chains[len(chains)-1] != c {
					chains = append(chains, c)
				}
			}
		}
		if !slices.IsSorted(decls) || !slices.IsSorted(chains) || len(slices.Compact(slices.Clone(chains))) != len(chains) {
			t.Errorf("not sorted: declarations %v, chains %v", decls, chains)
		}
	}
}

// --nfacct renders what a node with kube-proxy's nfacct counters gets: the
// INVALID drop and each 127.0.0.1 NodePort jump count; without it no rule
// names a counter (applying it would fail where the counters are missing).
func TestDumpNFAcct(t *testing.T) {
	args := []string{"dump", "-f", "../../../manifests/examples", "--node-name", "node1", "--cluster-cidr", "198.51.100.0/24"}
	code, plain, errOut := runMain(t, "", args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(plain, "nfacct") {
		t.Errorf("without --nfacct a rule names a counter:\n%s", grepLines(plain, "nfacct"))
	}
	code, counted, errOut := runMain(t, "", append(args, "--nfacct")...)
	if code != 0 {
		t.Fatalf("--nfacct: exit %d: %s", code, errOut)
	}
	invalid := grepLines(counted, "--nfacct-name ct_state_invalid_dropped_pkts")
	localhost := grepLines(counted, "--nfacct-name localhost_nps_accepted_pkts")
	if len(invalid) != 1 || !strings.HasPrefix(invalid[0], "-A KUBE-FORWARD -m conntrack --ctstate INVALID") {
		t.Errorf("INVALID drop rules counting: %q, want KUBE-FORWARD's one", invalid)
	}
	nodePorts := grepLines(plain, "-A KUBE-NODEPORTS")
	if len(localhost) == 0 || len(localhost) > len(nodePorts) {
		t.Errorf("%d localhost NodePort rules counting, for %d NodePort rules", len(localhost), len(nodePorts))
	}
	for _, l := range localhost {
		if !strings.Contains(l, "-d 127.0.0.0/8") {
			t.Errorf("counting rule not limited to 127.0.0.0/8: %s", l)
		}
	}
}

func grepLines(text, needle string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, needle) {
			out = append(out, l)
		}
	}
	return out
}
