package host

import (
	"net/netip"
	"strings"
	"testing"
)

// What "ip route; ip -6 route" prints on a Flannel node, as pasted into a
// bug report.
const ipRoute = `default via 192.0.2.1 dev eth0 proto dhcp src 192.0.2.11 metric 100
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.11 metric 100
198.51.100.0/26 dev cni0 proto kernel scope link src 198.51.100.1
198.51.100.64/26 via 198.51.100.64 dev flannel.1 onlink
198.51.100.128/26 dev cni1 proto kernel scope link linkdown
blackhole 198.51.100.192/26 proto bird
203.0.113.0/25 via 192.0.2.2 dev eth0 metric 50
203.0.113.0/25 via 192.0.2.3 dev eth1 metric 10
2001:db8::/64 dev eth0 proto kernel metric 256 pref medium
default via fe80::1 dev eth0 proto ra metric 1024 expires 1797sec hoplimit 64 pref medium
default proto static metric 2048 pref medium
	nexthop via 2001:db8::2 dev eth0 weight 1
	nexthop via 2001:db8::3 dev eth0 weight 1
10.99.0.0/16 via 192.0.2.9 dev eth0 table 100
`

const ipOAddr = `1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host \       valid_lft forever preferred_lft forever
2: eth0    inet 192.0.2.11/24 brd 192.0.2.255 scope global eth0\       valid_lft forever preferred_lft forever
2: eth0    inet6 2001:db8::11/64 scope global \       valid_lft forever preferred_lft forever
4: flannel.1    inet 198.51.100.0/32 scope global flannel.1\       valid_lft forever preferred_lft forever
5: cni0    inet 198.51.100.1/26 brd 198.51.100.63 scope global cni0\       valid_lft forever preferred_lft forever
7: veth12ab@if3    inet6 fe80::1/64 scope link \       valid_lft forever preferred_lft forever
`

func TestParseIPAddr(t *testing.T) {
	addrs, err := ParseIPAddr([]byte(ipOAddr))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.Iface+" "+a.Prefix.String())
	}
	want := "lo 127.0.0.1/8|lo ::1/128|eth0 192.0.2.11/24|eth0 2001:db8::11/64|flannel.1 198.51.100.0/32|cni0 198.51.100.1/26|veth12ab fe80::1/64"
	if strings.Join(got, "|") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, "|"), want)
	}
	// "ip addr" without -o reads the same.
	long := `2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP group default qlen 1000
    link/ether 52:54:00:12:34:56 brd ff:ff:ff:ff:ff:ff
    altname enp0s3
    inet 192.0.2.11/24 brd 192.0.2.255 scope global eth0
       valid_lft forever preferred_lft forever
    inet6 2001:db8::11/64 scope global
       valid_lft forever preferred_lft forever
`
	addrs, err = ParseIPAddr([]byte(long))
	if err != nil || len(addrs) != 2 || addrs[1].Iface != "eth0" || addrs[1].Prefix != netip.MustParsePrefix("2001:db8::11/64") {
		t.Errorf("ip addr: %v %v", addrs, err)
	}
	for text, msg := range map[string]string{
		"2: eth0    inet 192.0.2.300/24 scope global eth0": `line 1: "192.0.2.300/24" is not an address`,
		"default via 192.0.2.1 dev eth0":                   `line 1: not "ip -o addr" or "ip addr" output`,
		"    inet 192.0.2.1/24":                            "line 1: an address outside an interface",
		"":                                                 "no addresses in it",
	} {
		if _, err := ParseIPAddr([]byte(text)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseIPAddr(%q) error = %v, want %q", text, err, msg)
		}
	}
}

func TestRouteTable(t *testing.T) {
	rt, err := ParseIPRoute([]byte(ipRoute))
	if err != nil {
		t.Fatal(err)
	}
	rt.Addrs, err = ParseIPAddr([]byte(ipOAddr))
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]string{
		"203.0.113.10":   "203.0.113.10 via 192.0.2.3 dev eth1 src 192.0.2.11", // same prefix: lower metric; no src: a global address elsewhere
		"198.51.100.66":  "198.51.100.66 via 198.51.100.64 dev flannel.1 src 198.51.100.0",
		"198.51.100.7":   "198.51.100.7 dev cni0 src 198.51.100.1",
		"8.8.8.8":        "8.8.8.8 via 192.0.2.1 dev eth0 src 192.0.2.11",
		"192.0.2.11":     "192.0.2.11 dev lo src 192.0.2.11",
		"2001:db8::99":   "2001:db8::99 dev eth0 src 2001:db8::11",
		"2001:db8:77::1": "2001:db8:77::1 via fe80::1 dev eth0 src 2001:db8::11",
		"198.51.100.200": "error: blackhole route 198.51.100.192/26 (routes file line 6)",
	} {
		r, err := rt.RouteGet(netip.MustParseAddr(dst))
		got := r.String()
		if err != nil {
			got = "error: " + err.Error()
		}
		if got != want {
			t.Errorf("RouteGet(%s) = %s, want %s", dst, got, want)
		}
	}
	if len(rt.Routes) != 11 {
		t.Errorf("%d routes, want 11 (table 100 skipped, the multipath route once)", len(rt.Routes))
	}
	for text, msg := range map[string]string{
		"203.0.113.0/25 via 192.0.2.2 dev eth0 colour blue": `line 1: unknown word "colour"`,
		"nonsense":                    `line 1: "nonsense" is not a destination`,
		"192.0.2.0/24 via x dev eth0": `line 1: via: "x" is not an address`,
		"192.0.2.0/24 dev":            "line 1: dev without a value",
		"# nothing\n":                 "no routes in it",
	} {
		if _, err := ParseIPRoute([]byte(text)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseIPRoute(%q) error = %v, want %q", text, err, msg)
		}
	}
}
