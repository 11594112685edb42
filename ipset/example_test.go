package ipset_test

import (
	"fmt"
	"net/netip"

	"github.com/svcproxy/svcproxy/ipset"
)

// SyncSets against the Fake, as the proxier's tests would use it: the desired state goes in, the
// Fake's Dump shows what the kernel would hold.
func ExampleSyncSets() {
	fake := ipset.NewFake()
	desired := map[string]ipset.Desired{
		ipset.PodCIDRsSet: {Type: ipset.HashNet, Family: ipset.IPv4, Comment: "pod CIDRs",
			Members: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
		ipset.FamilyName(ipset.PodCIDRsSet, ipset.IPv6): {Type: ipset.HashNet, Family: ipset.IPv6,
			Members: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}},
		ipset.NoMasqSet: {Type: ipset.HashNet,
			Members: []netip.Prefix{netip.MustParsePrefix("203.0.113.7/32")}},
	}
	if err := ipset.SyncSets(fake, desired); err != nil {
		fmt.Println(err)
	}
	fmt.Print(fake.Dump())
	// Output:
	// create SVCPROXY-NO-MASQ hash:net family inet
	// add SVCPROXY-NO-MASQ 203.0.113.7
	// create SVCPROXY-POD-CIDRS hash:net family inet comment
	// add SVCPROXY-POD-CIDRS 192.0.2.0/24 comment "pod CIDRs"
	// create SVCPROXY-POD-CIDRS6 hash:net family inet6
	// add SVCPROXY-POD-CIDRS6 2001:db8:1::/48
}
