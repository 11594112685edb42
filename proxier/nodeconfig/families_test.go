package nodeconfig

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/iptables"
)

// fakeOpener opens fake iptables, failing for the families in fail, and
// records the backend each family was opened with.
type fakeOpener struct {
	fail     map[v1.IPFamily]error
	backend  iptables.Backend // what auto-detection "finds"
	openedAs map[v1.IPFamily]iptables.Backend
}

func (f *fakeOpener) open(_ context.Context, family v1.IPFamily, backend iptables.Backend) (iptables.Interface, error) {
	if f.openedAs == nil {
		f.openedAs = map[v1.IPFamily]iptables.Backend{}
	}
	f.openedAs[family] = backend
	if err := f.fail[family]; err != nil {
		return nil, err
	}
	ipt := iptables.NewFake(IPTablesFamily(family))
	ipt.BackendName = backend
	if backend == iptables.BackendAuto {
		ipt.BackendName = f.backend
	}
	return ipt, nil
}

func TestDetectFamilies(t *testing.T) {
	errNo6 := errors.New("ip6tables-legacy-save: can't initialize ip6tables table `nat'")
	errKernel := errors.New("IPv6 is disabled in the kernel")

	t.Run("both usable; IPv6 uses the backend IPv4 detected", func(t *testing.T) {
		o := &fakeOpener{backend: iptables.BackendLegacy}
		ipts, errs := FamilyDetector{Open: o.open}.Detect(context.Background(), iptables.BackendAuto)
		if ipts[v1.IPv4Protocol] == nil || ipts[v1.IPv6Protocol] == nil || len(errs) != 0 {
			t.Fatalf("ipts %v, errs %v; want both families", ipts, errs)
		}
		if !ipts[v1.IPv6Protocol].IsIPv6() || ipts[v1.IPv4Protocol].IsIPv6() {
			t.Errorf("families mixed up")
		}
		if o.openedAs[v1.IPv4Protocol] != iptables.BackendAuto || o.openedAs[v1.IPv6Protocol] != iptables.BackendLegacy {
			t.Errorf("opened with %v; want IPv4 auto, IPv6 legacy (IPv4's choice)", o.openedAs)
		}
	})
	t.Run("an explicit backend is used for both", func(t *testing.T) {
		o := &fakeOpener{}
		FamilyDetector{Open: o.open}.Detect(context.Background(), iptables.BackendNFT)
		if o.openedAs[v1.IPv4Protocol] != iptables.BackendNFT || o.openedAs[v1.IPv6Protocol] != iptables.BackendNFT {
			t.Errorf("opened with %v; want nft for both", o.openedAs)
		}
	})
	t.Run("ip6tables unusable", func(t *testing.T) {
		o := &fakeOpener{fail: map[v1.IPFamily]error{v1.IPv6Protocol: errNo6}}
		ipts, errs := FamilyDetector{Open: o.open}.Detect(context.Background(), iptables.BackendAuto)
		if ipts[v1.IPv4Protocol] == nil || ipts[v1.IPv6Protocol] != nil || !errors.Is(errs[v1.IPv6Protocol], errNo6) {
			t.Fatalf("ipts %v, errs %v; want IPv4 only, IPv6's error kept", ipts, errs)
		}
	})
	t.Run("kernel without IPv6: ip6tables not even tried", func(t *testing.T) {
		o := &fakeOpener{}
		ipts, errs := FamilyDetector{Open: o.open, KernelIPv6: func() error { return errKernel }}.Detect(context.Background(), iptables.BackendAuto)
		if ipts[v1.IPv6Protocol] != nil || !errors.Is(errs[v1.IPv6Protocol], errKernel) {
			t.Fatalf("ipts %v, errs %v; want IPv6 left out for the kernel's reason", ipts, errs)
		}
		if _, tried := o.openedAs[v1.IPv6Protocol]; tried {
			t.Errorf("ip6tables was run although the kernel has no IPv6")
		}
	})
	t.Run("IPv4 unusable: IPv6 keeps the configured backend", func(t *testing.T) {
		o := &fakeOpener{fail: map[v1.IPFamily]error{v1.IPv4Protocol: errNo6}}
		ipts, _ := FamilyDetector{Open: o.open}.Detect(context.Background(), iptables.BackendAuto)
		if ipts[v1.IPv4Protocol] != nil || ipts[v1.IPv6Protocol] == nil || o.openedAs[v1.IPv6Protocol] != iptables.BackendAuto {
			t.Errorf("ipts %v, opened with %v", ipts, o.openedAs)
		}
	})
}

func TestChooseFamilies(t *testing.T) {
	v4, v6 := v1.IPv4Protocol, v1.IPv6Protocol
	fake := func(fams ...v1.IPFamily) map[v1.IPFamily]iptables.Interface {
		m := map[v1.IPFamily]iptables.Interface{}
		for _, f := range fams {
			m[f] = iptables.NewFake(IPTablesFamily(f))
		}
		return m
	}
	errsFor := func(fams ...v1.IPFamily) map[v1.IPFamily]error {
		m := map[v1.IPFamily]error{}
		for _, f := range fams {
			m[f] = errors.New(string(f) + " broken")
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		primary v1.IPFamily
		usable  []v1.IPFamily
		want    []v1.IPFamily
		wantErr string
	}{
		{"both usable: dual-stack, IPv4 primary", v4, []v1.IPFamily{v4, v6}, []v1.IPFamily{v4, v6}, ""},
		{"both usable: dual-stack, IPv6 primary", v6, []v1.IPFamily{v4, v6}, []v1.IPFamily{v4, v6}, ""},
		{"no ip6tables: IPv4 single-stack", v4, []v1.IPFamily{v4}, []v1.IPFamily{v4}, ""},
		{"IPv6-only node without iptables: IPv6 single-stack", v6, []v1.IPFamily{v6}, []v1.IPFamily{v6}, ""},
		{"primary family unusable: refused, as kube-proxy", v6, []v1.IPFamily{v4}, nil, `no support for primary IP family "IPv6": IPv6 broken`},
		{"nothing usable", v4, nil, nil, "iptables is not available on this host: IPv4 broken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var broken []v1.IPFamily
			for _, f := range AllFamilies {
				if !slices.Contains(tc.usable, f) {
					broken = append(broken, f)
				}
			}
			got, err := chooseFamilies(tc.primary, fake(tc.usable...), errsFor(broken...))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestPrimaryFamily(t *testing.T) {
	v6first := testNode()
	v6first.Status.Addresses = []v1.NodeAddress{
		{Type: v1.NodeExternalIP, Address: "203.0.113.200"},
		{Type: v1.NodeInternalIP, Address: "2001:db8::11"},
		{Type: v1.NodeInternalIP, Address: "192.0.2.11"},
	}
	noAddrs := testNode()
	noAddrs.Status.Addresses = nil
	for _, tc := range []struct {
		name string
		bind string
		node *v1.Node
		want v1.IPFamily
	}{
		{"no Node, default bind address: IPv4", "0.0.0.0", nil, v1.IPv4Protocol},
		{"Node without addresses: IPv4", "0.0.0.0", noAddrs, v1.IPv4Protocol},
		{"first InternalIP decides (IPv6)", "0.0.0.0", v6first, v1.IPv6Protocol},
		{"first InternalIP decides (IPv6), bind ::", "::", v6first, v1.IPv6Protocol},
		{"InternalIPs before ExternalIPs", "", testNode(), v1.IPv6Protocol}, // testNode: 2001:db8::11 is the first InternalIP
		{"a specific bind address overrides the Node", "192.0.2.99", v6first, v1.IPv4Protocol},
		{"IPv6 bind address", "2001:db8::99", nil, v1.IPv6Protocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := primaryFamily(tc.bind, tc.node); got != tc.want {
				t.Errorf("primaryFamily(%q) = %s, want %s", tc.bind, got, tc.want)
			}
		})
	}
}

func TestWaitForNodeAddresses(t *testing.T) {
	ctx := context.Background()
	withAddrs := testNode()
	bare := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}

	calls := 0
	got := waitForNodeAddresses(ctx, "node1", func(context.Context) (*v1.Node, error) {
		calls++
		switch calls {
		case 1:
			return nil, errors.New(`nodes "node1" not found`)
		case 2:
			return bare, nil
		}
		return withAddrs, nil
	}, 5*time.Second, time.Millisecond)
	if got != withAddrs || calls != 3 {
		t.Errorf("got %v after %d calls; want the Node once it has addresses (3 calls)", got, calls)
	}

	// (That it returns at all is the timeout's doing; how soon is the
	// machine's business, so not checked.)
	got = waitForNodeAddresses(ctx, "node1", func(context.Context) (*v1.Node, error) { return bare, nil }, 50*time.Millisecond, time.Millisecond)
	if got != bare {
		t.Errorf("no addresses: got %v; want the bare Node after the timeout", got)
	}
	got = waitForNodeAddresses(ctx, "node1", func(context.Context) (*v1.Node, error) { return nil, errors.New("forbidden") }, 50*time.Millisecond, time.Millisecond)
	if got != nil {
		t.Errorf("no Node: got %v, want nil", got)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if got := waitForNodeAddresses(cancelled, "node1", func(context.Context) (*v1.Node, error) { return nil, errors.New("down") }, time.Minute, time.Second); got != nil {
		t.Errorf("cancelled: got %v", got)
	}
}

func TestHealthCheckAddrs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		family v1.IPFamily
		values []string
		want   []netip.Addr
	}{
		{"IPv4, every address", v1.IPv4Protocol, nil, addrs("0.0.0.0")},
		{"IPv6, every address", v1.IPv6Protocol, nil, addrs("::")},
		{"IPv6 --nodeport-addresses", v1.IPv6Protocol, []string{"192.0.2.0/24", "2001:db8::/64"}, addrs("2001:db8::11")},
		{"IPv4 --nodeport-addresses", v1.IPv4Protocol, []string{"192.0.2.0/24", "2001:db8::/64"}, addrs("192.0.2.11")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseSettings()
			cfg.NodePortAddresses = tc.values
			b := &Builder{Settings: cfg, Family: tc.family, NodeName: "node1",
				LocalAddrs: func() ([]netip.Addr, error) { return addrs("127.0.0.1", "192.0.2.11", "2001:db8::11", "::1"), nil }}
			if got := HealthCheckAddrs(b.Build(testNode())); !slices.Equal(got, tc.want) {
				t.Errorf("healthCheckAddrs = %v, want %v", got, tc.want)
			}
		})
	}
}

// The IPv6 proxier's node configuration takes the IPv6 --bind-address
// first (the IPv4 case is in TestNodeIPsAndTopology).
func TestNodeIPsIPv6BindAddress(t *testing.T) {
	cfg := baseSettings()
	cfg.BindAddress = "2001:db8::99"
	if got, want := build(cfg, v1.IPv6Protocol, testNode()).NodeIPs, addrs("2001:db8::99", "2001:db8::11"); !slices.Equal(got, want) {
		t.Errorf("IPv6 --bind-address on IPv6: NodeIPs = %v, want %v", got, want)
	}
	cfg.BindAddress = "192.0.2.99" // other family: ignored
	if got, want := build(cfg, v1.IPv6Protocol, testNode()).NodeIPs, addrs("2001:db8::11"); !slices.Equal(got, want) {
		t.Errorf("IPv4 --bind-address on IPv6: NodeIPs = %v, want %v", got, want)
	}
}

// recordingExec answers what the family probe asks and records every
// command; a whole-table save is answered with an error it can see.
type recordingExec struct{ argvs []string }

func (r *recordingExec) Run(_ context.Context, name string, args []string, _ []byte) ([]byte, error) {
	argv := strings.Join(append([]string{name}, args...), " ")
	r.argvs = append(r.argvs, argv)
	switch {
	case strings.HasSuffix(name, "-save"):
		return nil, errors.New("whole-table save: takes minutes and crashes on big nodes")
	case slices.Contains(args, "--version"):
		return []byte("iptables v1.8.9 (nf_tables)\n"), nil
	}
	return nil, nil // every "-S CHAIN 1" finds its chain
}

// The family probe asks one built-in chain, never a whole table (issue 14).
func TestOpenIPTablesAsksOneChain(t *testing.T) {
	for _, backend := range []iptables.Backend{iptables.BackendAuto, iptables.BackendNFT} {
		ex := &recordingExec{}
		if _, err := OpenIPTables(ex)(context.Background(), v1.IPv6Protocol, backend); err != nil {
			t.Fatalf("%s: %v (ran %q)", backend, err, ex.argvs)
		}
		if !slices.Contains(ex.argvs, "ip6tables-nft -w 5 -t nat -S POSTROUTING 1") {
			t.Errorf("%s: the probe did not ask nat POSTROUTING; ran %q", backend, ex.argvs)
		}
		for _, argv := range ex.argvs {
			if strings.Contains(strings.Fields(argv)[0], "-save") {
				t.Errorf("%s: the probe ran %q", backend, argv)
			}
		}
	}
}
