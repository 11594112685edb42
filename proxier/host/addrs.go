package host

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// IfaceAddr is one address of one interface, with its prefix length
// (192.0.2.11/24 on eth0).
type IfaceAddr struct {
	Iface  string       `json:"iface"`
	Prefix netip.Prefix `json:"prefix"`
}

// IfaceAddrsOfNode lists every address of every interface of this node
// (IPv4-mapped IPv6 addresses unmapped).
func IfaceAddrsOfNode() ([]IfaceAddr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	var out []IfaceAddr
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("listing the addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			bits, _ := ipn.Mask.Size()
			ip = ip.Unmap()
			if ip.Is4() && bits > 32 {
				bits -= 96
			}
			out = append(out, IfaceAddr{Iface: ifc.Name, Prefix: netip.PrefixFrom(ip, bits)})
		}
	}
	return out, nil
}

// AddrsOf returns the addresses alone.
func AddrsOf(addrs []IfaceAddr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Prefix.Addr())
	}
	return out
}

// ByIface groups addresses by interface.
func ByIface(addrs []IfaceAddr) map[string][]netip.Prefix {
	out := map[string][]netip.Prefix{}
	for _, a := range addrs {
		out[a.Iface] = append(out[a.Iface], a.Prefix)
	}
	return out
}

// IfaceOf returns the interface that holds addr, or "".
func IfaceOf(addrs []IfaceAddr, addr netip.Addr) string {
	if i := slices.IndexFunc(addrs, func(a IfaceAddr) bool { return a.Prefix.Addr() == addr }); i >= 0 {
		return addrs[i].Iface
	}
	return ""
}

// ParseIPAddr reads what "ip -o addr" prints (one address a line, as a bug
// report carries it), or "ip addr" (an interface header, then its
// addresses). Link lines and lifetimes are skipped. Errors name the line.
func ParseIPAddr(text []byte) ([]IfaceAddr, error) {
	var out []IfaceAddr
	iface := "" // the interface of the last "N: NAME: <FLAGS>" header
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		f := strings.Fields(line)
		lineErr := func(format string, a ...any) error {
			return fmt.Errorf("line %d: %s: %q", n, fmt.Sprintf(format, a...), line)
		}
		switch {
		case len(f) == 0:
			continue
		case isIndex(f[0]) && len(f) >= 2 && strings.HasSuffix(f[1], ":"):
			iface = ifaceName(strings.TrimSuffix(f[1], ":"))
			continue
		case isIndex(f[0]) && len(f) >= 4 && (f[2] == "inet" || f[2] == "inet6"):
			p, err := parseIfaceAddr(f[3:])
			if err != nil {
				return nil, lineErr("%v", err)
			}
			out = append(out, IfaceAddr{Iface: ifaceName(f[1]), Prefix: p})
		case isIndex(f[0]) && len(f) >= 3 && strings.HasPrefix(f[2], "link/"):
			continue // "ip -o link"-style lines mixed in
		case f[0] == "inet" || f[0] == "inet6":
			if iface == "" || len(f) < 2 {
				return nil, lineErr("an address outside an interface (want \"ip -o addr\" or \"ip addr\" output)")
			}
			p, err := parseIfaceAddr(f[1:])
			if err != nil {
				return nil, lineErr("%v", err)
			}
			out = append(out, IfaceAddr{Iface: iface, Prefix: p})
		case strings.HasPrefix(f[0], "link/") || f[0] == "valid_lft" || f[0] == "altname" || strings.HasPrefix(line, " "):
			continue
		default:
			return nil, lineErr("not \"ip -o addr\" or \"ip addr\" output")
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no addresses in it (want \"ip -o addr\" output)")
	}
	return out, nil
}

// isIndex reports whether s is an interface index as ip prints it: "2:".
func isIndex(s string) bool {
	n := strings.TrimSuffix(s, ":")
	return n != s && n != "" && strings.Trim(n, "0123456789") == ""
}

// ifaceName strips the "@peer" ip adds to veth and vlan names.
func ifaceName(s string) string {
	name, _, _ := strings.Cut(s, "@")
	return name
}

// parseIfaceAddr reads "192.0.2.11/24 brd ..." or "10.0.0.1 peer 10.0.0.2/32".
func parseIfaceAddr(f []string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(f[0]); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address", f[0])
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
