package iptables

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/hack/testns"
)

// TestRealNFAcct checks the netlink counters in a throwaway namespace: a
// missing counter is ErrNoCounter and a rule naming it fails the restore;
// Ensure makes it once (a second Ensure keeps its counts); rules of both
// families and backends count into it.
func TestRealNFAcct(t *testing.T) {
	ns := testns.New(t)
	acct, err := NewNFAcct(ns.Name)
	if err != nil {
		t.Skipf("kernel without nfnetlink_acct: %v", err)
	}
	const name = "svcproxy_test_pkts"
	if _, err := acct.Get(name); !errors.Is(err, ErrNoCounter) {
		t.Fatalf("Get before Ensure: %v, want ErrNoCounter", err)
	}
	rules := func(port string) []byte {
		return []byte("*filter\n-A OUTPUT -o lo -p tcp --dport " + port + " -m nfacct --nfacct-name " + name + " -j ACCEPT\nCOMMIT\n")
	}
	ctx := context.Background()
	needBinaries(t, "iptables-restore")
	ipt, err := New(NetnsExecutor{Namespace: ns.Name}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ipt.Restore(ctx, rules("9"), RestoreOptions{NoFlush: true}); err == nil {
		t.Fatal("a rule naming a missing counter was restored")
	}
	if err := acct.Ensure(name); err != nil {
		t.Fatal(err)
	}
	for _, be := range backends {
		for _, fam := range []Family{IPv4, IPv6} {
			if _, err := exec.LookPath(binary(fam, be, "-restore")); err != nil {
				continue
			}
			ipt, err := New(NetnsExecutor{Namespace: ns.Name}, Options{Family: fam, Backend: be})
			if err != nil {
				t.Fatal(err)
			}
			if err := ipt.Restore(ctx, rules("9"), RestoreOptions{NoFlush: true}); err != nil {
				t.Fatalf("%s %s: restore with the counter: %v", be, fam, err)
			}
		}
	}
	ns.Run(t, "ip", "link", "set", "lo", "up")
	// Three refused connections to 127.0.0.1:9 and [::1]:9: each SYN leaves
	// through OUTPUT on lo (the reset comes back through INPUT).
	ns.Do(t, func() {
		for _, addr := range []string{"127.0.0.1:9", "[::1]:9"} {
			for range 3 {
				if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
					c.Close()
				} else if !strings.Contains(err.Error(), "refused") {
					t.Fatalf("dial %s: %v", addr, err)
				}
			}
		}
	})
	if err := acct.Ensure(name); err != nil {
		t.Fatal(err)
	}
	c, err := acct.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	// Each SYN meets one rule of each backend and family that holds one:
	// at least the nft IPv4 and IPv6 ones.
	if c.Packets < 6 || c.Bytes < 6*40 {
		t.Errorf("counter after 6 SYNs: %+v, want at least 6 packets", c)
	}
}
