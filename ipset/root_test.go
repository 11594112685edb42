package ipset

// Tests in this file talk to the kernel. Each runs inside a throwaway network namespace (ipsets
// are per namespace) from hack/testns, and skips with a message when it cannot: hack/testns's rule
// (not root, no `ip` binary, no namespace support, -short), or no ipset netlink in the kernel. They use the ipset
// and iptables binaries only to verify what the package did through netlink.

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/hack/testns"
)

// inNetNS creates a network namespace (hack/testns), runs body on this goroutine's OS thread
// switched into it, then switches back; the namespace is deleted when the test ends. body must not
// hand kernel work to other goroutines (they run in the original namespace); use ns.Exec or a
// netlink handle bound to the namespace there.
func inNetNS(t *testing.T, body func(ns *testns.NS)) {
	t.Helper()
	ns := testns.New(t)
	ns.Do(t, func() {
		if _, _, err := netlink.IpsetProtocol(); err != nil {
			t.Skipf("skipping kernel test: ipset netlink unavailable in the kernel: %v", err)
		}
		body(ns)
	})
}

func needBinaries(t *testing.T, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("skipping kernel test: %s binary needed to verify: %v", b, err)
		}
	}
}

// savedSet is one set as `ipset save` prints it.
type savedSet struct {
	create  string // the create line, minus "create NAME "
	members []netip.Prefix
	comment map[netip.Prefix]string
}

// ipsetSave reads a set back with the ipset binary, independently of this package.
func ipsetSave(t *testing.T, ns *testns.NS, name string) savedSet {
	t.Helper()
	out := ns.Run(t, "ipset", "save", name)
	s := savedSet{comment: map[netip.Prefix]string{}, members: []netip.Prefix{}}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "create" && f[1] == name:
			s.create = strings.Join(f[2:], " ")
		case len(f) >= 3 && f[0] == "add" && f[1] == name:
			p, err := netip.ParsePrefix(f[2])
			if err != nil {
				a, aerr := netip.ParseAddr(f[2])
				if aerr != nil {
					t.Fatalf("ipset save: cannot parse member %q", f[2])
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			s.members = append(s.members, p)
			if i := strings.Index(line, ` comment "`); i >= 0 {
				s.comment[p] = strings.TrimSuffix(line[i+len(` comment "`):], `"`)
			}
		}
	}
	sortPrefixes(s.members)
	return s
}

func ipsetNames(t *testing.T, ns *testns.NS) []string {
	t.Helper()
	names := strings.Fields(ns.Run(t, "ipset", "list", "-n"))
	slices.Sort(names)
	return names
}

// iptablesRef adds (or, with del, removes) an iptables rule that references set.
func iptablesRef(t *testing.T, ns *testns.NS, set string, del bool) {
	t.Helper()
	op := "-A"
	if del {
		op = "-D"
	}
	ns.Run(t, "iptables", "-w", op, "INPUT", "-m", "set", "--match-set", set, "src", "-j", "ACCEPT")
}

// countingOps counts the calls that write to the kernel.
type countingOps struct {
	ops
	mu     sync.Mutex
	writes []string
}

func (c *countingOps) note(s string) { c.mu.Lock(); c.writes = append(c.writes, s); c.mu.Unlock() }
func (c *countingOps) add(name string, e *netlink.IPSetEntry) error {
	c.note("add " + name)
	return c.ops.add(name, e)
}
func (c *countingOps) swap(a, b string) error { c.note("swap " + a); return c.ops.swap(a, b) }
func (c *countingOps) reset() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

func TestRootConformance(t *testing.T) {
	needBinaries(t, "iptables")
	inNetNS(t, func(ns *testns.NS) {
		checkConformance(t, harness{
			iface:      New(),
			markInUse:  func(t *testing.T, n string) { iptablesRef(t, ns, n, false) },
			clearInUse: func(t *testing.T, n string) { iptablesRef(t, ns, n, true) },
		})
	})
}

func TestRootSyncVerifiedWithIpsetBinary(t *testing.T) {
	needBinaries(t, "ipset")
	inNetNS(t, func(ns *testns.NS) {
		counter := &countingOps{ops: nlOps{}}
		iface := newNetlinkSets(counter)
		desired := proxyDesired()
		if err := SyncSets(iface, desired); err != nil {
			t.Fatal(err)
		}
		for name, d := range desired {
			got := ipsetSave(t, ns, name)
			want, _ := normalizeMembers(d.Type, d.Family, d.Members)
			if !slices.Equal(got.members, want) {
				t.Errorf("ipset save %s: members %v, want %v", name, got.members, want)
			}
			if !strings.HasPrefix(got.create, fmt.Sprintf("%s family %s ", d.Type, d.Family)) {
				t.Errorf("ipset save %s: create line %q, want type %s family %s", name, got.create, d.Type, d.Family)
			}
			if hasComment := strings.Contains(" "+got.create+" ", " comment "); hasComment != (d.Comment != "") {
				t.Errorf("ipset save %s: create line %q; comment support should be %v", name, got.create, d.Comment != "")
			}
			for p, c := range got.comment {
				if c != d.Comment {
					t.Errorf("ipset save %s: member %v has comment %q, want %q", name, p, c, d.Comment)
				}
			}
			if d.Comment != "" && len(got.comment) != len(want) {
				t.Errorf("ipset save %s: comments on %d of %d members", name, len(got.comment), len(want))
			}
			listed, err := iface.ListMembers(name)
			if err != nil || !slices.Equal(listed, want) {
				t.Errorf("ListMembers(%s) = %v, %v; want %v", name, listed, err, want)
			}
		}
		wantNames := []string{NoMasqSet, NoMasqSet6, PodCIDRsSet, PodCIDRsSet6}
		if got := ipsetNames(t, ns); !slices.Equal(got, wantNames) {
			t.Errorf("ipset list -n = %v, want %v (no temporary sets)", got, wantNames)
		}
		if got, err := iface.ListSets(); err != nil || !slices.Equal(got, wantNames) {
			t.Errorf("ListSets() = %v, %v; want %v", got, err, wantNames)
		}

		// Idempotent: a second sync writes nothing.
		counter.reset()
		if err := SyncSets(iface, desired); err != nil {
			t.Fatal(err)
		}
		if w := counter.reset(); len(w) != 0 {
			t.Errorf("second SyncSets wrote to the kernel: %v", w)
		}

		// Someone destroys a set and leaves a half-filled temporary set behind: the next sync heals both.
		ns.Run(t, "ipset", "destroy", PodCIDRsSet)
		ns.Run(t, "ipset", "create", TempName(NoMasqSet), "hash:net")
		ns.Run(t, "ipset", "add", TempName(NoMasqSet), "192.0.2.128/25")
		desired[NoMasqSet] = Desired{Type: HashNet, Members: pfx("198.51.100.0/24")}
		if err := SyncSets(iface, desired); err != nil {
			t.Fatal(err)
		}
		if got := ipsetSave(t, ns, PodCIDRsSet).members; !slices.Equal(got, pfx("192.0.2.0/24")) {
			t.Errorf("re-created %s holds %v", PodCIDRsSet, got)
		}
		if got := ipsetSave(t, ns, NoMasqSet).members; !slices.Equal(got, pfx("198.51.100.0/24")) {
			t.Errorf("%s holds %v", NoMasqSet, got)
		}
		if got := ipsetNames(t, ns); !slices.Equal(got, wantNames) {
			t.Errorf("ipset list -n = %v, want %v", got, wantNames)
		}

		// A set the ipset binary created (newest revision, comments on) is replaced in place,
		// keeping its revision. vishvananda/netlink logs about header attributes of new revisions.
		log.SetOutput(io.Discard)
		defer log.SetOutput(os.Stderr)
		ns.Run(t, "ipset", "create", "SVCPROXY-BY-BINARY", "hash:net", "comment")
		ns.Run(t, "ipset", "add", "SVCPROXY-BY-BINARY", "203.0.113.0/24", "comment", "made by hand")
		before := ns.Run(t, "ipset", "list", "-t", "SVCPROXY-BY-BINARY")
		if err := iface.ReplaceMembers("SVCPROXY-BY-BINARY", pfx("203.0.113.0/24", "198.51.100.1")); err != nil {
			t.Fatal(err)
		}
		got := ipsetSave(t, ns, "SVCPROXY-BY-BINARY")
		if !slices.Equal(got.members, pfx("198.51.100.1", "203.0.113.0/24")) || got.comment[pfx("198.51.100.1")[0]] != "made by hand" {
			t.Errorf("SVCPROXY-BY-BINARY after replace: %+v", got)
		}
		after := ns.Run(t, "ipset", "list", "-t", "SVCPROXY-BY-BINARY")
		if rev := func(s string) string { return strings.Fields(s[strings.Index(s, "Revision:"):])[1] }; rev(before) != rev(after) {
			t.Errorf("revision changed:\n%s\n%s", before, after)
		}

		// Cleanup removes exactly our prefix.
		ns.Run(t, "ipset", "create", "KUBE-SOMETHING", "hash:ip")
		if err := Cleanup(iface, Prefix); err != nil {
			t.Fatal(err)
		}
		if got := ipsetNames(t, ns); !slices.Equal(got, []string{"KUBE-SOMETHING"}) {
			t.Errorf("after Cleanup: ipset list -n = %v", got)
		}
	})
}

func TestRootInUseByIptablesRule(t *testing.T) {
	needBinaries(t, "ipset", "iptables")
	inNetNS(t, func(ns *testns.NS) {
		iface := New()
		if err := SyncSets(iface, proxyDesired()); err != nil {
			t.Fatal(err)
		}
		iptablesRef(t, ns, PodCIDRsSet, false)

		err := iface.Destroy(PodCIDRsSet)
		wantErr(t, "Destroy of a set an iptables rule references", err, ErrInUse, PodCIDRsSet)
		t.Logf("Destroy while referenced: %v", err)

		// Replacing swaps contents under the rule; the rule keeps matching the same name.
		if err := iface.ReplaceMembers(PodCIDRsSet, pfx("198.51.100.0/24")); err != nil {
			t.Fatal(err)
		}
		ns.Run(t, "iptables", "-w", "-C", "INPUT", "-m", "set", "--match-set", PodCIDRsSet, "src", "-j", "ACCEPT")
		if hdr := ns.Run(t, "ipset", "list", "-t", PodCIDRsSet); !strings.Contains(hdr, "References: 1") {
			t.Errorf("after replace the rule no longer references %s:\n%s", PodCIDRsSet, hdr)
		}
		if got := ipsetSave(t, ns, PodCIDRsSet).members; !slices.Equal(got, pfx("198.51.100.0/24")) {
			t.Errorf("%s holds %v", PodCIDRsSet, got)
		}

		// Cleanup skips the referenced set without failing and removes the rest.
		if err := Cleanup(iface, Prefix); err != nil {
			t.Fatalf("Cleanup with a referenced set = %v, want nil (logged and skipped)", err)
		}
		if got := ipsetNames(t, ns); !slices.Equal(got, []string{PodCIDRsSet}) {
			t.Errorf("after Cleanup: ipset list -n = %v, want only the referenced set", got)
		}

		// Once the rule is gone, Cleanup removes it too (the nf_tables backend may release the
		// reference a moment after the rule is deleted).
		iptablesRef(t, ns, PodCIDRsSet, true)
		deadline := time.Now().Add(time.Minute) // a bound on a release that never comes
		for {
			if err := Cleanup(iface, Prefix); err != nil {
				t.Fatal(err)
			}
			names := ipsetNames(t, ns)
			if len(names) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sets left after the rule was deleted: %v", names)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// observation counts probes of one address against a set, made from other goroutines.
type observation struct {
	netlinkProbes, netlinkMisses atomic.Int64
	execProbes, execMisses       atomic.Int64
	mu                           sync.Mutex
	firstMiss                    string
}

func (o *observation) miss(s string) {
	o.mu.Lock()
	if o.firstMiss == "" {
		o.firstMiss = s
	}
	o.mu.Unlock()
}

// observe probes whether probe is in set until stop closes (or 5 s pass), from two goroutines:
// a tight loop of netlink TEST requests through a handle bound to the namespace, and a slower
// loop of `ipset test` runs, as an operator would check. Both loops are bounded in count.
func observe(t *testing.T, ns *testns.NS, set string, probe netip.Addr, stop <-chan struct{}) (*observation, func()) {
	t.Helper()
	nsh, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_NETFILTER)
	nsh.Close()
	if err != nil {
		t.Fatal(err)
	}
	o := &observation{}
	hardStop := time.Now().Add(5 * time.Minute) // only if the test never stops them
	running := func() bool {
		select {
		case <-stop:
			return false
		default:
			return time.Now().Before(hardStop)
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer h.Close()
		for i := 0; i < 1_000_000 && running(); i++ {
			ok, err := h.IpsetTest(set, &netlink.IPSetEntry{IP: net.IP(probe.AsSlice())})
			o.netlinkProbes.Add(1)
			if !ok || err != nil {
				o.netlinkMisses.Add(1)
				o.miss(fmt.Sprintf("netlink TEST %s %s: in=%v err=%v", set, probe, ok, err))
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 500 && running(); i++ {
			_, err := ns.Exec(context.Background(), "ipset", "test", set, probe.String())
			o.execProbes.Add(1)
			if err != nil {
				o.execMisses.Add(1)
				o.miss(fmt.Sprintf("ipset test %s %s: %v", set, probe, err))
			}
		}
	}()
	return o, wg.Wait
}

func TestRootSwapUnderTraffic(t *testing.T) {
	needBinaries(t, "ipset")
	inNetNS(t, func(ns *testns.NS) {
		const set = "SVCPROXY-SWAP-TEST"
		probe := netip.MustParseAddr("192.0.2.10")
		// Both lists hold 192.0.2.0/24 (which covers the probe) and 200 other hosts.
		listA, listB := pfx("192.0.2.0/24"), pfx("192.0.2.0/24")
		for i := range 200 {
			listA = append(listA, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 32))
			listB = append(listB, netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 32))
		}
		iface := New()
		if err := iface.EnsureSet(Set{Name: set, Type: HashNet}); err != nil {
			t.Fatal(err)
		}
		if err := iface.ReplaceMembers(set, listA); err != nil {
			t.Fatal(err)
		}

		// A fixed number of replaces, each overlapping netlink probes (the
		// next waits until one has started since this one did), and
		// ipset-test probes across them: counted, not timed, so the
		// verdict is the same on a fast machine and a loaded one.
		const replaces = 40
		stop := make(chan struct{})
		o, wait := observe(t, ns, set, probe, stop)
		progress := func(what string, cond func() bool) {
			t.Helper()
			for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					close(stop)
					wait()
					t.Fatalf("waiting for %s: no progress in two minutes", what)
				}
			}
		}
		progress("the observers to start", func() bool { return o.netlinkProbes.Load() > 0 && o.execProbes.Load() > 0 })
		execBefore := o.execProbes.Load()
		var werr error
		for i := range replaces {
			l := listA
			if i%2 == 0 {
				l = listB
			}
			before := o.netlinkProbes.Load()
			if werr = iface.ReplaceMembers(set, l); werr != nil {
				break
			}
			progress(fmt.Sprintf("a netlink probe during replace %d", i+1), func() bool { return o.netlinkProbes.Load() > before })
		}
		if werr == nil {
			progress("ipset-test probes during the replaces", func() bool { return o.execProbes.Load() >= execBefore+5 })
		}
		close(stop)
		wait()
		if werr != nil {
			t.Fatalf("ReplaceMembers during traffic: %v", werr)
		}
		t.Logf("%d replaces; %d netlink probes, %d ipset-test probes; misses %d/%d",
			replaces, o.netlinkProbes.Load(), o.execProbes.Load(), o.netlinkMisses.Load(), o.execMisses.Load())
		if n := o.netlinkMisses.Load() + o.execMisses.Load(); n > 0 {
			t.Errorf("%s was observed missing %d times during atomic replaces; first: %s", probe, n, o.firstMiss)
		}
		if got, err := iface.ListSets(); err != nil || !slices.Equal(got, []string{set}) {
			t.Errorf("ListSets() = %v, %v; want only %s (no temporary set)", got, err, set)
		}

		// Control: the same observers catch the non-atomic way (flush, then add one by one),
		// which shows they can see a gap when there is one. Logged, not asserted: it is a race.
		stop = make(chan struct{})
		o, wait = observe(t, ns, set, probe, stop)
		deadline := time.Now().Add(500 * time.Millisecond)
		for i := 0; i < 200 && time.Now().Before(deadline); i++ {
			if err := netlink.IpsetFlush(set); err != nil {
				t.Fatal(err)
			}
			for j := len(listA) - 1; j >= 0; j-- { // the covering prefix goes in last
				if err := netlink.IpsetAdd(set, entryFor(HashNet, listA[j], "")); err != nil {
					t.Fatal(err)
				}
			}
		}
		close(stop)
		wait()
		t.Logf("control (flush + add, not atomic): %s missing in %d of %d netlink probes",
			probe, o.netlinkMisses.Load(), o.netlinkProbes.Load())
		if err := iface.Destroy(set); err != nil {
			t.Fatal(err)
		}
	})
}
