package main

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// variant is one proxy under test: a column of the report, on a node of its
// own.
type variant struct {
	label string // column header, e.g. "kp-iptables"
	short string // in the ratio columns' headers, e.g. "kpI"
	// svcproxy variants are the denominators of the ratio columns, the
	// others (kube-proxy modes) the numerators.
	svcproxy bool
	// nft: the variant programs nftables (table ip6 kube-proxy) rather than
	// iptables chains.
	nft bool
	// command is the command line; common holds the flags every variant
	// gets (kube-proxy's, as a DaemonSet passes them).
	command func(common []string) []string
}

// variants are the proxies compared, in column order. Variant i runs on lab
// node i+1.
func variants(cfg config) []variant {
	return []variant{
		{label: "svcproxy", short: "svp", svcproxy: true, command: func(c []string) []string {
			return append([]string{cfg.Svcproxy, "--proxy-mode", "iptables"}, c...)
		}},
		{label: "svp-kplayout", short: "svpK", svcproxy: true, command: func(c []string) []string {
			return append([]string{cfg.Svcproxy, "--proxy-mode", "iptables", "--rule-layout=kube-proxy"}, c...)
		}},
		{label: "kp-iptables", short: "kpI", command: func(c []string) []string {
			return append([]string{cfg.KubeProxy, "--proxy-mode", "iptables"}, c...)
		}},
		{label: "kp-nftables", short: "kpN", nft: true, command: func(c []string) []string {
			return append([]string{cfg.KubeProxy, "--proxy-mode", "nftables"}, c...)
		}},
	}
}

// startOrder is the order of the cold starts: kube-proxy's iptables mode
// last (the one most likely to hit the cap).
func startOrder(vs []variant) []int {
	var first, last []int
	for k, v := range vs {
		if !v.svcproxy && !v.nft {
			last = append(last, k)
		} else {
			first = append(first, k)
		}
	}
	return append(first, last...)
}

// commonFlags are the flags every variant gets on node n (the mode is the
// variant's). --iptables-(min-)sync-period apply to kube-proxy's nftables
// mode too (they set the mode-independent sync periods).
func (b *bench) commonFlags(n *lab.Node) []string {
	return []string{
		"--kubeconfig", b.cp.Kubeconfig(),
		"--hostname-override", n.Name,
		"--cluster-cidr", lab.PodNetwork + "," + lab.PodNetwork6,
		"--iptables-min-sync-period", b.cfg.MinSync.String(),
		"--iptables-sync-period", "1h",
		"--conntrack-max-per-core", "0",
		"--healthz-bind-address", n.IP + ":10256",
		"--metrics-bind-address", "127.0.0.1:10249",
		"--v", "2", // svcproxy logs restoreBytes of partial syncs at 2
	}
}

// daemon is a variant running on its node.
type daemon struct {
	variant
	node  *lab.Node
	argv  []string
	proc  *lab.Proc
	start time.Time
	// running: started and programmed; false when it has not been started
	// yet or was stopped at the cap.
	running bool
}

// start starts d's process.
func (b *bench) start(d *daemon) error {
	d.start = time.Now()
	p, err := b.l.StartProcess(d.node.NS, d.label+"-"+d.node.Name, d.argv...)
	if err != nil {
		return err
	}
	d.proc = p
	return nil
}

// stop stops d's process (if started).
func (d *daemon) stop() {
	if d.proc != nil {
		_ = d.proc.Stop()
	}
	d.running = false
}

// chainName is service port ns/name:port's chain: KUBE-SVC-<hash> (the
// iptables layouts, kube-proxy's portProtoHash) or
// service-<hash>-ns/name/tcp/port (kube-proxy's nftables mode).
func chainName(nft bool, ns, name, port string) string {
	if nft {
		base := ns + "/" + name + "/tcp/" + port
		h := sha256.Sum256([]byte(base))
		return "service-" + base32.StdEncoding.EncodeToString(h[:])[:8] + "-" + base
	}
	h := sha256.Sum256([]byte(ns + "/" + name + ":" + port + "tcp"))
	return "KUBE-SVC-" + base32.StdEncoding.EncodeToString(h[:])[:16]
}

// chain lists one chain of d's node: `ip6tables -t nat -S CHAIN` or
// `nft list chain ip6 kube-proxy CHAIN`. One chain, never a table: a
// table of 100,000+ chains takes minutes to save.
func (b *bench) chain(ctx context.Context, d *daemon, chain string) (string, error) {
	argv := []string{"ip6tables", "-w", "5", "-t", "nat", "-S", chain}
	if d.nft {
		argv = []string{"nft", "list", "chain", "ip6", "kube-proxy", chain}
	}
	out, err := lab.Exec(ctx, d.node.NS, argv...)
	return string(out), err
}

// svcChain lists bench Service name's chain on d's node.
func (b *bench) svcChain(ctx context.Context, d *daemon, name string) (string, error) {
	return b.chain(ctx, d, chainName(d.nft, kns, name, portName))
}

// hasEndpoint reports whether the listing of Service name's chain names
// endpoint addr (port targetPort): inline as a DNAT target (svcproxy's
// compact layout), through its KUBE-SEP chain (kube-proxy's layout; the
// chain name is kube-proxy's hash of service port, protocol and endpoint),
// or in kube-proxy's nftables service chain: inline in its dnat map
// ("0 : 2001:db8:9::1 . 10000") or through an endpoint chain (used with
// session affinity; its name spells IPv6 colons as dots).
func hasEndpoint(listing, name, addr string, nft bool) bool {
	if nft {
		return strings.Contains(listing, " "+addr+" . ") || strings.Contains(listing, "__"+strings.ReplaceAll(addr, ":", ".")+"/")
	}
	return strings.Contains(listing, "["+addr+"]:") || strings.Contains(listing, sepChainName(kns, name, portName, addr, targetPort))
}

// sepChainName is kube-proxy's KUBE-SEP chain of endpoint [addr]:port of
// service port ns/name:port (tcp).
func sepChainName(ns, name, port, addr string, epPort int) string {
	h := sha256.Sum256([]byte(ns + "/" + name + ":" + port + "tcp" + net.JoinHostPort(addr, strconv.Itoa(epPort))))
	return "KUBE-SEP-" + base32.StdEncoding.EncodeToString(h[:])[:16]
}

// programmed reports whether d's node holds the rules of every bench
// Service: its first sync (IPv6) after the start has ended, and the first
// and last Services' chains list all their endpoints.
func (b *bench) programmed(ctx context.Context, d *daemon) error {
	m, err := b.metrics(ctx, d)
	if err != nil {
		return err
	}
	if m[lastSync] < unix(d.start) {
		return errors.New("no sync yet")
	}
	for _, i := range []int{0, b.cfg.N - 1} {
		s, err := b.svcChain(ctx, d, b.serviceName(i))
		if err != nil {
			return fmt.Errorf("%s: %w", b.serviceName(i), err)
		}
		for _, a := range b.endpoints(i) {
			if !hasEndpoint(s, b.serviceName(i), a, d.nft) {
				return fmt.Errorf("%s: endpoint %s not programmed yet", b.serviceName(i), a)
			}
		}
	}
	return nil
}

// cpu returns each daemon's CPU seconds (user+system, including waited-for
// children such as iptables-restore and nft); NaN for one not running.
func (b *bench) cpu() []float64 {
	out := make([]float64, len(b.ds))
	for k, d := range b.ds {
		out[k] = nan
		if d.running {
			out[k], _ = procStats(d.proc.Pid())
		}
	}
	return out
}

// procStats reads utime+stime+cutime+cstime (seconds) and VmRSS (KiB).
func procStats(pid int) (cpu, rssKiB float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		s := string(data)
		if j := strings.LastIndexByte(s, ')'); j >= 0 {
			f := strings.Fields(s[j+1:])
			// fields after ")" start at field 3 (state); utime is field 14.
			if len(f) > 14 {
				for _, x := range f[11:15] {
					v, _ := strconv.ParseFloat(x, 64)
					cpu += v
				}
				cpu /= 100 // USER_HZ
			}
		}
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					rssKiB, _ = strconv.ParseFloat(f[1], 64)
				}
			}
		}
	}
	return cpu, rssKiB
}

func numCPU() int {
	data, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(data), "processor\t:")
}

func kernelRelease() string {
	data, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(data))
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
