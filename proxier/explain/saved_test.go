package explain

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/iptables/trace"
	"github.com/svcproxy/svcproxy/proxier/host"
)

func loadSaved(t *testing.T, file string) Saved {
	t.Helper()
	text, err := os.ReadFile("../../iptables/testdata/nodes/" + file)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ParseSaved(file, text)
	if err != nil {
		t.Fatal(err)
	}
	return Saved{Name: file, Rules: d}
}

const calicoRoutes = `default via 192.0.2.1 dev eth0 proto static
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.11
blackhole 198.51.100.0/26 proto bird
198.51.100.2 dev cali5678efab901 scope link
198.51.100.3 dev cali1234abcd567 scope link
198.51.100.64/26 via 192.0.2.12 dev tunl0 proto bird onlink
`

const calicoAddrs = `1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever preferred_lft forever
2: eth0    inet 192.0.2.11/24 brd 192.0.2.255 scope global eth0\       valid_lft forever preferred_lft forever
5: tunl0    inet 198.51.100.1/32 scope global tunl0\       valid_lft forever preferred_lft forever
`

func TestExplainSaved(t *testing.T) {
	pod := trace.Packet{Src: netip.MustParseAddr("198.51.100.3"), Dst: netip.MustParseAddr("203.0.113.10"), DstPort: 80, Protocol: "tcp", SrcPort: 40000, Origin: trace.Incoming}

	// Calico's saved rules with the node's routes and addresses: the
	// interfaces come from the routes; the policy's set is unknown, so the
	// packet may be dropped, and the verdict says on what that depends.
	s := loadSaved(t, "calico-nft.txt")
	var err error
	if s.Routes, err = host.ParseIPRoute([]byte(calicoRoutes)); err != nil {
		t.Fatal(err)
	}
	if s.Addrs, err = host.ParseIPAddr([]byte(calicoAddrs)); err != nil {
		t.Fatal(err)
	}
	r, err := ExplainSaved(s, pod)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != StatusUncertain || r.Packet.InIface != "cali1234abcd567" ||
		!strings.Contains(r.Verdict, `UNCERTAIN: the packet may be dropped — DROP: rule "Drop if no policies passed packet" (filter cali-tw-cali5678efab901 rule 7) — depending on filter/cali-pi-_kVjeIb9nZmHQEdV rule 1 (set cali40s:Zw2aSnhXdGhX1cXZ2PmsU2Q: its members are unknown), assumed it did not match; run explain on the node, which reads the sets`) {
		t.Errorf("calico: %s\n%s", r.Status, r.Text())
	}
	if r.Rules.Source != "file" || r.Rules.File != "calico-nft.txt" || len(r.Routes) != 3 {
		t.Errorf("rules %+v, routes %v", r.Rules, r.Routes)
	}
	if !strings.Contains(r.Text(), "rule 1: -A KUBE-SERVICES -d 203.0.113.10/32 -p tcp -m comment") {
		t.Errorf("the rule text keeps its [packets:bytes] counter:\n%s", r.Text())
	}

	// An old (1.4.21) legacy save without routes or addresses: the rules
	// still decide, the route checks are skipped and the output says so.
	s = loadSaved(t, "flannel-docker-legacy-1.4.21.txt")
	node := trace.Packet{Src: netip.MustParseAddr("192.0.2.11"), Dst: netip.MustParseAddr("203.0.113.10"), DstPort: 80, Protocol: "tcp", SrcPort: 40000, Origin: trace.Local}
	r, err = ExplainSaved(s, node)
	if err != nil {
		t.Fatal(err)
	}
	text := r.Text()
	if r.Status != StatusOK || !strings.Contains(text, "\n  routes: the route to the destination, to each endpoint, and the reply's way back (no routes: give --routes FILE") ||
		!strings.Contains(text, "sysctls: ip_forward, rp_filter") || !strings.Contains(r.Verdict, "reaches 3 endpoints of demo/web:http") {
		t.Errorf("flannel without routes: %s\n%s", r.Status, text)
	}

	// IPv6.
	s = loadSaved(t, "kube-proxy-ipv6-nft.txt")
	v6 := trace.Packet{Src: netip.MustParseAddr("2001:db8:1:1::7"), Dst: netip.MustParseAddr("2001:db8:5::a"), DstPort: 80, Protocol: "tcp", SrcPort: 40000, Origin: trace.Incoming, InIface: "cni0"}
	if r, err := ExplainSaved(s, v6); err != nil || r.Status != StatusOK || len(r.Endpoints()) != 2 {
		t.Errorf("ipv6: %v\n%s", err, r.Text())
	}
}

func TestExplainSavedBadInput(t *testing.T) {
	var inErr *InputError
	if _, err := ParseSaved("bug.txt", []byte("*filter\n-A FORWARD -j ACCEPT\n")); !errors.As(err, &inErr) || !strings.Contains(err.Error(), `bug.txt: line 1: table "filter" has no COMMIT`) {
		t.Errorf("no COMMIT: %v", err)
	}
	if _, err := ParseSaved("bug.txt", []byte("Chain INPUT (policy ACCEPT)\n")); !errors.As(err, &inErr) || !strings.Contains(err.Error(), "bug.txt: line 1: not inside a table") {
		t.Errorf("iptables -L output: %v", err)
	}
	s := loadSaved(t, "kube-proxy-ipv6-nft.txt")
	v4 := trace.Packet{Src: netip.MustParseAddr("198.51.100.3"), Dst: netip.MustParseAddr("203.0.113.10"), DstPort: 80, Protocol: "tcp", Origin: trace.Incoming}
	if _, err := ExplainSaved(s, v4); !errors.As(err, &inErr) || !strings.Contains(err.Error(), "kube-proxy-ipv6-nft.txt holds IPv6 rules but the destination 203.0.113.10 is IPv4") {
		t.Errorf("family: %v", err)
	}
	s = loadSaved(t, "calico-nft.txt")
	if _, err := ExplainSaved(s, trace.Packet{Dst: netip.MustParseAddr("203.0.113.10"), DstPort: 80, Protocol: "tcp", Origin: trace.Local}); !errors.As(err, &inErr) || !strings.Contains(err.Error(), "give --from NODE_IP, --node-ip or --addrs") {
		t.Errorf("--from-node without the node's address: %v", err)
	}
}
