package iptables

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/hack/testns"
)

// These tests drive the real iptables binaries. They need root, and run in
// a throwaway network namespace so the host's tables are never touched;
// otherwise they skip.

// newNetns creates a network namespace for the test (deleted when it
// ends), or skips it by hack/testns's rule.
func newNetns(t *testing.T) NetnsExecutor {
	t.Helper()
	return NetnsExecutor{Namespace: testns.New(t).Name}
}

// needBinaries skips unless every named binary is installed.
func needBinaries(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("skipping: %s not installed", n)
		}
	}
}

var backends = []Backend{BackendNFT, BackendLegacy}

// TestRealRestoreAcceptsSamples checks that the sample rulesets the parser,
// fake and tracer tests use are valid iptables-restore input.
func TestRealRestoreAcceptsSamples(t *testing.T) {
	samples := []struct {
		file   string
		family Family
	}{{"testdata/kube-proxy-v4.txt", IPv4}, {"testdata/kube-proxy-v6.txt", IPv6}}
	for _, be := range backends {
		for _, s := range samples {
			t.Run(string(be)+"/"+s.file, func(t *testing.T) {
				bin := binary(s.family, be, "-restore")
				needBinaries(t, bin)
				ns := newNetns(t)
				data, err := os.ReadFile(s.file)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ns.Run(t.Context(), bin, []string{"--test"}, data); err != nil {
					t.Errorf("%s --test rejected %s: %v", bin, s.file, err)
				}
			})
		}
	}
}

// shape reduces a dump to what real iptables-save and the Fake agree on
// (real iptables canonicalises rule arguments): chains, policies, rule counts.
func shape(d *Dump, tables ...Table) []string {
	var out []string
	for _, name := range tables {
		for _, c := range d.Table(name).Chains {
			out = append(out, fmt.Sprintf("%s/%s %s %d", name, c.Name, c.Policy, len(c.Rules)))
		}
	}
	slices.Sort(out)
	return out
}

// TestRealMatchesFake applies the same restore sequence to the real
// binaries and to the Fake, and compares the results.
func TestRealMatchesFake(t *testing.T) {
	for _, be := range backends {
		t.Run(string(be), func(t *testing.T) {
			needBinaries(t, binary(IPv4, be, ""), binary(IPv4, be, "-restore"), binary(IPv4, be, "-save"))
			ns := newNetns(t)
			ctx := t.Context()
			real, err := New(ns, Options{Backend: be})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if real.Backend() != be || real.IsIPv6() || !real.HasRandomFully() {
				t.Errorf("Backend %q, IsIPv6 %v, HasRandomFully %v", real.Backend(), real.IsIPv6(), real.HasRandomFully())
			}
			fake := NewFake(IPv4)
			sample, err := os.ReadFile("testdata/kube-proxy-v4.txt")
			if err != nil {
				t.Fatal(err)
			}
			steps := []string{
				string(sample),
				// A partial sync: re-declare (flush) one service's chains, drop an endpoint.
				"*nat\n:KUBE-SVC-X - [0:0]\n:KUBE-SEP-A - [0:0]\n-A KUBE-SVC-X -j KUBE-SEP-B\n-X KUBE-SEP-A\nCOMMIT\n",
				// Built-in chains are not flushed by a declaration; -I positions.
				"*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n-I INPUT 2 -s 10.0.0.1 -j ACCEPT\n-I KUBE-FORWARD -j ACCEPT\nCOMMIT\n",
			}
			for i, step := range steps {
				opts := RestoreOptions{NoFlush: true}
				if err := real.Restore(ctx, []byte(step), opts); err != nil {
					t.Fatalf("step %d: real Restore: %v", i, err)
				}
				if err := fake.Restore(ctx, []byte(step), opts); err != nil {
					t.Fatalf("step %d: fake Restore: %v", i, err)
				}
				realDump := &Dump{}
				for _, table := range []Table{TableFilter, TableNAT} {
					out, err := real.Save(ctx, table)
					if err != nil {
						t.Fatalf("Save(%s): %v", table, err)
					}
					d, err := ParseDump(out)
					if err != nil {
						t.Fatalf("ParseDump(real iptables-save -t %s): %v\n%s", table, err, out)
					}
					realDump.Tables = append(realDump.Tables, d.Tables...)
				}
				// What real iptables-save prints (canonicalised by the
				// kernel round trip) must be understood by ParseRuleArgs.
				for _, table := range realDump.Tables {
					for _, c := range table.Chains {
						for _, r := range c.Rules {
							if _, err := ParseRuleArgs(r.Args); err != nil {
								t.Errorf("step %d: real iptables-save rule %q: %v", i, r.Raw, err)
							}
						}
					}
				}
				got, want := shape(realDump, TableFilter, TableNAT), shape(fake.Dump(), TableFilter, TableNAT)
				if !slices.Equal(got, want) {
					t.Errorf("step %d: real and fake differ:\n real %q\n fake %q", i, got, want)
				}
			}

			// Failures: both refuse, and nothing changes.
			for _, bad := range []string{
				"*nat\n:KUBE-NEW - [0:0]\n-A KUBE-NEW -j KUBE-MISSING\nCOMMIT\n",
				"*nat\n-X KUBE-SVC-X\nCOMMIT\n",
				"*nat\n-X KUBE-NOPE\nCOMMIT\n",
			} {
				before, _ := real.Save(ctx, TableNAT)
				err := real.Restore(ctx, []byte(bad), RestoreOptions{NoFlush: true})
				var rerr *RestoreError
				if !errors.As(err, &rerr) || rerr.Line == 0 || !strings.Contains(rerr.Lines, ">") {
					t.Errorf("real Restore(%q) = %v, want a *RestoreError with a line", bad, err)
				}
				if fake.Restore(ctx, []byte(bad), RestoreOptions{NoFlush: true}) == nil {
					t.Errorf("fake accepted %q", bad)
				}
				after, _ := real.Save(ctx, TableNAT)
				if dropComments(before) != dropComments(after) {
					t.Errorf("failed restore %q changed the real nat table", bad)
				}
			}
		})
	}
}

// dropComments removes iptables-save's "# Generated ..." lines.
func dropComments(b []byte) string {
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func TestRealChainAndRuleMethods(t *testing.T) {
	for _, be := range backends {
		for _, fam := range []Family{IPv4, IPv6} {
			t.Run(string(be)+"/"+string(fam), func(t *testing.T) {
				needBinaries(t, binary(fam, be, ""), binary(fam, be, "-save"))
				ns := newNetns(t)
				ctx := t.Context()
				ipt, err := New(ns, Options{Family: fam, Backend: be})
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				check := func(what string, err error) {
					t.Helper()
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
				}
				exists := func(chain string) bool {
					t.Helper()
					ok, err := ipt.ChainExists(ctx, TableNAT, chain)
					check("ChainExists", err)
					return ok
				}
				if exists("KUBE-SERVICES") {
					t.Fatalf("fresh namespace has KUBE-SERVICES")
				}
				check("EnsureChain", ipt.EnsureChain(ctx, TableNAT, "KUBE-SERVICES"))
				check("EnsureChain again", ipt.EnsureChain(ctx, TableNAT, "KUBE-SERVICES"))
				if !exists("KUBE-SERVICES") || !exists("OUTPUT") {
					t.Fatalf("ChainExists is wrong")
				}
				rule := []string{"-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}
				existed, err := ipt.EnsureRule(ctx, Append, TableNAT, "OUTPUT", rule...)
				check("EnsureRule", err)
				existed2, err := ipt.EnsureRule(ctx, Prepend, TableNAT, "OUTPUT", rule...)
				check("EnsureRule again", err)
				if existed || !existed2 {
					t.Errorf("EnsureRule existed = %v then %v, want false then true", existed, existed2)
				}
				out, err := ipt.Save(ctx, TableNAT)
				check("Save", err)
				if n := strings.Count(string(out), "-j KUBE-SERVICES"); n != 1 {
					t.Errorf("%d jump rules after two EnsureRule calls:\n%s", n, out)
				}
				if err := ipt.DeleteChain(ctx, TableNAT, "KUBE-SERVICES"); err == nil {
					t.Errorf("DeleteChain of a referenced chain succeeded")
				}
				check("DeleteRule", ipt.DeleteRule(ctx, TableNAT, "OUTPUT", rule...))
				check("DeleteRule missing", ipt.DeleteRule(ctx, TableNAT, "OUTPUT", rule...))
				check("FlushChain", ipt.FlushChain(ctx, TableNAT, "KUBE-SERVICES"))
				check("FlushChain missing", ipt.FlushChain(ctx, TableNAT, "KUBE-NOPE"))
				check("DeleteChain", ipt.DeleteChain(ctx, TableNAT, "KUBE-SERVICES"))
				check("DeleteChain missing", ipt.DeleteChain(ctx, TableNAT, "KUBE-SERVICES"))
				if exists("KUBE-SERVICES") {
					t.Errorf("KUBE-SERVICES still exists")
				}
			})
		}
	}
}

func TestRealDetectBackend(t *testing.T) {
	needBinaries(t, "iptables-legacy", "iptables-legacy-restore", "iptables-legacy-save", "iptables-nft-save", "iptables-nft")
	ns := newNetns(t)
	ctx := t.Context()
	legacy, err := New(ns, Options{Backend: BackendLegacy})
	if err != nil {
		t.Fatal(err)
	}
	if err := legacy.Restore(ctx, []byte("*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"), RestoreOptions{NoFlush: true}); err != nil {
		t.Fatal(err)
	}
	auto, err := New(ns, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if auto.Backend() != BackendLegacy {
		t.Errorf("auto-detected %q in a namespace whose KUBE- chains are legacy", auto.Backend())
	}
}
