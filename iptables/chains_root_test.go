package iptables

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestRealListChainsAndSaveChain checks, against the real binaries of both
// backends in a throwaway namespace, that ListChains (netlink on nft) names
// exactly the chains iptables-save declares, and that SaveChain prints one
// chain as iptables -S does.
func TestRealListChainsAndSaveChain(t *testing.T) {
	var restore strings.Builder
	restore.WriteString("*nat\n")
	var want []string
	for i := range 500 {
		c := fmt.Sprintf("KUBE-SEP-%016d", i)
		want = append(want, c)
		restore.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range want {
		restore.WriteString("-A " + c + " -j RETURN\n")
	}
	restore.WriteString("COMMIT\n")
	for _, be := range backends {
		for _, fam := range []Family{IPv4, IPv6} {
			t.Run(string(be)+"/"+string(fam), func(t *testing.T) {
				needBinaries(t, binary(fam, be, "-restore"))
				ns := newNetns(t)
				ipt, err := New(ns, Options{Family: fam, Backend: be})
				if err != nil {
					t.Fatal(err)
				}
				ctx := context.Background()
				if err := ipt.Restore(ctx, []byte(restore.String()), RestoreOptions{NoFlush: true}); err != nil {
					t.Fatal(err)
				}
				got, err := ipt.ListChains(ctx, TableNAT)
				if err != nil {
					t.Fatal(err)
				}
				saved, err := ipt.Save(ctx, TableNAT)
				if err != nil {
					t.Fatal(err)
				}
				// iptables-save shows nf_tables' built-in chains even before
				// they exist; compare the user-defined ones.
				userDefined := func(names []string) []string {
					names = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return IsBuiltinChain(TableNAT, n) })
					slices.Sort(names)
					return names
				}
				if got, fromSave := userDefined(got), userDefined(ChainNames(saved)); !slices.Equal(got, fromSave) || len(got) != len(want) {
					t.Errorf("ListChains: %d user-defined chains, iptables-save: %d (want %d)", len(got), len(fromSave), len(want))
				}
				one, err := ipt.SaveChain(ctx, TableNAT, want[7])
				if err != nil {
					t.Fatal(err)
				}
				if w := "-N " + want[7] + "\n-A " + want[7] + " -j RETURN\n"; string(one) != w {
					t.Errorf("SaveChain = %q, want %q", one, w)
				}
				if _, err := ipt.SaveChain(ctx, TableNAT, "NO-SUCH-CHAIN"); !errors.Is(err, ErrNoChain) {
					t.Errorf("SaveChain of a missing chain: %v, want ErrNoChain", err)
				}
				// A table nothing has used yet has only its built-in chains, or none.
				if names, err := ipt.ListChains(ctx, TableRaw); err != nil || len(names) > 5 {
					t.Errorf("ListChains(raw) = %d chains, %v; want at most the built-in ones", len(names), err)
				}
			})
		}
	}
}
