package app

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxier/explain"
)

const nodes = "../../../iptables/testdata/nodes/"

const twoLinkRoutes = `default via 192.0.2.12 dev eth0
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.11
198.51.100.0/26 dev eth1 proto kernel scope link src 198.51.100.1
198.51.100.64/26 via 198.51.100.65 dev eth1 onlink
`

const twoLinkAddrs = `1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever preferred_lft forever
2: eth0    inet 192.0.2.11/24 brd 192.0.2.255 scope global eth0\       valid_lft forever preferred_lft forever
3: eth1    inet 198.51.100.1/26 brd 198.51.100.63 scope global eth1\       valid_lft forever preferred_lft forever
`

// explain --rules traces saved files of any shape the tests hold, with or
// without the node's routes and addresses.
func TestExplainSavedRules(t *testing.T) {
	routes := writeFile(t, "routes.txt", twoLinkRoutes)
	addrs := writeFile(t, "addrs.txt", twoLinkAddrs)
	tests := []struct {
		name    string
		args    []string
		stdin   string
		code    int
		verdict string
		want    []string
	}{
		{"an old legacy save, names from the comments; both ways of an undecided physdev test accept", []string{"--rules", nodes + "flannel-docker-legacy-1.4.21.txt", "--from", "198.51.100.4", "--in-iface", "cni0", "--to", "demo/web"}, "", 0,
			"OK: 203.0.113.10:80/tcp reaches 3 endpoints of demo/web:http", []string{"resolved: demo/web is 203.0.113.10:80/tcp (demo/web:http, from the rule comments)", "not checked:\n  the node's addresses"}},
		{"from stdin, with counters, a policy set unknown", []string{"--rules", "-", "--from", "198.51.100.3", "--in-iface", "cali1234abcd567", "--to", "203.0.113.30:80"}, readTestFile(t, nodes+"calico-nft.txt"), 1,
			"REJECT: Service demo/empty port http has no endpoints (filter KUBE-SERVICES rule 1)", []string{"rules: stdin (saved)"}},
		{"ip6tables-nft, by name", []string{"--rules", nodes + "kube-proxy-ipv6-nft.txt", "--from", "2001:db8:1:1::7", "--in-iface", "cni0", "--to", "demo/web:80"}, "", 0,
			"OK: [2001:db8:5::a]:80/tcp reaches 2 endpoints of demo/web:http", nil},
		{"the issue's node from a saved file: routes and addresses known, rp_filter not", []string{"--rules", nodes + "cilium-chaining-nft.txt", "--routes", routes, "--addrs", addrs, "--from-node", "--to", "203.0.113.10:80"}, "", 1,
			"UNCERTAIN: replies from 198.51.100.66:8080 to 192.0.2.11 arrive on eth0 while 198.51.100.66 is routed via eth1", []string{"198.51.100.66:8080: from 192.0.2.11 (on eth0, chosen by the route to 203.0.113.10), out by eth1 via 198.51.100.65"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runMain(t, tt.stdin, append([]string{"explain"}, tt.args...)...)
			checkExplained(t, code, out, errOut, tt.code, tt.verdict, tt.want)
		})
	}
}

// -o json carries where the rules came from, the resolution, undecided
// tests, return paths and skipped checks.
func TestExplainSavedJSON(t *testing.T) {
	routes := writeFile(t, "routes.txt", twoLinkRoutes)
	addrs := writeFile(t, "addrs.txt", twoLinkAddrs)
	code, out, errOut := runMain(t, "", "explain", "--rules", nodes+"cilium-chaining-nft.txt", "--routes", routes, "--addrs", addrs,
		"--from-node", "--to", "demo/web:http", "-o", "json")
	if code != 1 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var r explain.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Status != explain.StatusUncertain || r.Rules.Source != "file" || r.Resolved == nil || r.Resolved.Via != "rule comments" || r.Resolved.Dst != "203.0.113.10:80" {
		t.Errorf("report %+v", r)
	}
	var remote *explain.ReturnPath
	for i, rp := range r.ReturnPaths {
		if rp.Endpoint == "198.51.100.66:8080" {
			remote = &r.ReturnPaths[i]
		}
	}
	if remote == nil || remote.SourceIface != "eth0" || remote.Out.Iface != "eth1" || remote.ReplyIface != "eth0" || remote.Masquerade {
		t.Errorf("return path %+v", remote)
	}
	if len(r.Skipped) == 0 || !strings.Contains(strings.Join(r.Skipped, "|"), "sysctls") {
		t.Errorf("skipped %q", r.Skipped)
	}
	// An uncertain outcome in JSON.
	code, out, _ = runMain(t, "", "explain", "--rules", nodes+"calico-nft.txt", "--from", "198.51.100.3", "--in-iface", "cali1234abcd567", "--to", "203.0.113.10:80", "-o", "json")
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 1 {
		t.Fatalf("exit %d, %v", code, err)
	}
	found := false
	for _, o := range r.Outcomes {
		for _, d := range o.Uncertain {
			found = found || d.Chain == "cali-pi-_kVjeIb9nZmHQEdV" && d.Rule == 1 && d.Assumed != "" && strings.Contains(d.What, "cali40s")
		}
	}
	if !found {
		t.Errorf("no uncertain outcome naming the policy rule:\n%s", out)
	}
}

func TestExplainSavedBadInput(t *testing.T) {
	bad := writeFile(t, "bad.txt", "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n")
	badRoutes := writeFile(t, "routes.txt", "default via 192.0.2.1 dev eth0\n192.0.2.0/24 dev eth0 colour blue\n")
	badAddrs := writeFile(t, "addrs.txt", "2: eth0 inet 192.0.2.999/24\n")
	v6 := nodes + "kube-proxy-ipv6-nft.txt"
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--rules", bad, "--from", "198.51.100.4", "--to", "203.0.113.10:80"}, `bad.txt: line 1: table "filter" has no COMMIT`},
		{[]string{"--rules", "/nonexistent/rules", "--from", "198.51.100.4", "--to", "203.0.113.10:80"}, "--rules: open /nonexistent/rules: no such file or directory"},
		{[]string{"--rules", v6, "--routes", badRoutes, "--from", "2001:db8:1:1::7", "--to", "[2001:db8:5::a]:80"}, `routes.txt: line 2: unknown word "colour"`},
		{[]string{"--rules", v6, "--addrs", badAddrs, "--from", "2001:db8:1:1::7", "--to", "[2001:db8:5::a]:80"}, `addrs.txt: line 1: "192.0.2.999/24" is not an address`},
		{[]string{"--rules", v6, "--from", "198.51.100.4", "--to", "203.0.113.10:80"}, "kube-proxy-ipv6-nft.txt holds IPv6 rules but the destination 203.0.113.10 is IPv4"},
		{[]string{"--rules", v6, "--from", "2001:db8:1:1::7", "--to", "demo/nope"}, "--to demo/nope: service demo/nope not found in the rule comments"},
		{[]string{"--rules", v6, "-f", "../../../manifests/examples", "--from-node", "--to", "203.0.113.10:80"}, "-f and --rules: give one of them"},
		{[]string{"--routes", badRoutes, "--from-node", "--to", "203.0.113.10:80"}, "--routes goes with --rules"},
		{[]string{"--rules", v6, "--from-node", "--to", "demo/web", "--port", "80"}, "--port goes with --to IP"},
	} {
		code, out, errOut := runMain(t, "", append([]string{"explain"}, tt.args...)...)
		if code != 2 || !strings.Contains(errOut, tt.want) || out != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit 2 and %q", tt.args, code, errOut, out, tt.want)
		}
	}
}

// --to NAMESPACE/NAME resolves through the manifests (-f) and through the
// API server (--kubeconfig).
func TestExplainServiceByName(t *testing.T) {
	code, out, _ := runExplain(t, "--from", "198.51.100.4", "--to", "demo/web")
	if code != 0 || !strings.Contains(out, "resolved: demo/web is 203.0.113.10:80/tcp (demo/web:http, from the manifests)") {
		t.Errorf("-f: exit %d\n%s", code, out)
	}
	code, out, _ = runExplain(t, "--from", "198.51.100.4", "--to", "kube-system/dns:dns")
	if code != 0 || !strings.Contains(out, "packet: udp 198.51.100.4 -> 203.0.113.53:53") {
		t.Errorf("udp port by name: exit %d\n%s", code, out)
	}
	code, _, errOut := runExplain(t, "--from", "198.51.100.4", "--to", "kube-system/dns")
	if code != 2 || !strings.Contains(errOut, "service kube-system/dns has several ports: dns (udp 53), dns-tcp (tcp 53); name one") {
		t.Errorf("ambiguous: exit %d %q", code, errOut)
	}

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/api/v1/namespaces/demo/services/web" {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`))
			return
		}
		w.Write([]byte(`{"kind":"Service","apiVersion":"v1","metadata":{"name":"web","namespace":"demo"},
			"spec":{"clusterIP":"203.0.113.10","clusterIPs":["203.0.113.10"],"ports":[{"name":"http","port":80,"protocol":"TCP"}]}}`))
	}))
	defer api.Close()
	kubeconfig := writeFile(t, "kubeconfig", `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+api.URL+`"}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`)
	code, out, errOut = runMain(t, "", "explain", "--rules", nodes+"ufw-legacy.txt", "--kubeconfig", kubeconfig, "--from", "198.51.100.4", "--in-iface", "cni0", "--to", "demo/web")
	if !strings.Contains(out, "resolved: demo/web is 203.0.113.10:80/tcp (demo/web:http, from the API server)") {
		t.Errorf("--kubeconfig: exit %d %q\n%s", code, errOut, out)
	}
	code, _, errOut = runMain(t, "", "explain", "--rules", nodes+"ufw-legacy.txt", "--kubeconfig", kubeconfig, "--from", "198.51.100.4", "--to", "demo/gone")
	if code != 2 || !strings.Contains(errOut, "service demo/gone not found in the API server") {
		t.Errorf("--kubeconfig, unknown name: exit %d %q", code, errOut)
	}
}

func readTestFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
