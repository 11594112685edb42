package iptables

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

// saveAll returns the fake's canonical text for the named tables.
func saveAll(t *testing.T, f *Fake, tables ...Table) string {
	t.Helper()
	var b strings.Builder
	for _, table := range tables {
		out, err := f.Save(context.Background(), table)
		if err != nil {
			t.Fatalf("Save(%s): %v", table, err)
		}
		b.Write(out)
	}
	return b.String()
}

func mustRestore(t *testing.T, f *Fake, text string, noFlush bool) {
	t.Helper()
	if err := f.Restore(context.Background(), []byte(text), RestoreOptions{NoFlush: noFlush}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
}

func TestFakeStartsWithBuiltinChains(t *testing.T) {
	f := NewFake(IPv4)
	want := `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
`
	if got := f.Dump().String(); got != want {
		t.Errorf("initial dump:\n%s\nwant:\n%s", got, want)
	}
	if _, err := f.Save(context.Background(), TableRaw); err == nil {
		t.Errorf("Save(raw) succeeded on a fake without a raw table")
	}
	if f.IsIPv6() || !NewFake(IPv6).IsIPv6() || f.Backend() != "nft" || !f.HasRandomFully() {
		t.Errorf("fake identity is wrong")
	}
}

// TestFakeNoFlushSemantics checks the behaviours measured on iptables-restore
// v1.8.9 (nft and legacy) in a scratch network namespace.
func TestFakeNoFlushSemantics(t *testing.T) {
	f := NewFake(IPv4)
	mustRestore(t, f, `*filter
:INPUT ACCEPT [0:0]
:FOO - [0:0]
:BAR - [0:0]
-A INPUT -j FOO
-A FOO -j ACCEPT
-A BAR -s 10.0.0.1 -j DROP
COMMIT
*nat
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
COMMIT
`, true)
	// Re-declaring a built-in chain does not flush it; re-declaring a user
	// chain does; -X needs an empty chain; the nat table is not mentioned
	// and keeps its rules.
	mustRestore(t, f, `*filter
:INPUT DROP [0:0]
:FOO - [0:0]
:BAR - [0:0]
-X BAR
-A INPUT -s 1.2.3.4 -j ACCEPT
-I FOO -s 3.3.3.3 -j ACCEPT
-I FOO 1 -s 2.2.2.2 -j ACCEPT
-I FOO 3 -s 4.4.4.4 -j ACCEPT
-A FOO -m comment --comment "two words" -j RETURN
COMMIT
`, true)
	want := `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FOO - [0:0]
-A INPUT -j FOO
-A INPUT -s 1.2.3.4 -j ACCEPT
-A FOO -s 2.2.2.2 -j ACCEPT
-A FOO -s 3.3.3.3 -j ACCEPT
-A FOO -s 4.4.4.4 -j ACCEPT
-A FOO -m comment --comment "two words" -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
COMMIT
`
	if got := saveAll(t, f, TableFilter, TableNAT); got != want {
		t.Errorf("after second restore:\n%s\nwant:\n%s", got, want)
	}
	// An inserted rule's Raw is its -A form.
	if raw := f.Dump().Chain(TableFilter, "FOO").Rules[0].Raw; raw != "-A FOO -s 2.2.2.2 -j ACCEPT" {
		t.Errorf("inserted rule Raw = %q", raw)
	}
	if f.Restores() != 2 || !strings.Contains(string(f.LastRestore()), "-X BAR") {
		t.Errorf("Restores() = %d, LastRestore() = %q", f.Restores(), f.LastRestore())
	}
}

func TestFakeFullRestoreReplacesMentionedTables(t *testing.T) {
	f := NewFake(IPv4)
	mustRestore(t, f, "*filter\n:OLD - [0:0]\n-A INPUT -j OLD\nCOMMIT\n*nat\n:KEEP - [0:0]\nCOMMIT\n", true)
	mustRestore(t, f, "*filter\n:OUTPUT DROP [0:0]\n:NEW - [0:0]\n-A NEW -j ACCEPT\nCOMMIT\n", false)
	want := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n:NEW - [0:0]\n-A NEW -j ACCEPT\nCOMMIT\n"
	if got := saveAll(t, f, TableFilter); got != want {
		t.Errorf("filter after full restore:\n%s\nwant:\n%s", got, want)
	}
	if f.Dump().Chain(TableNAT, "KEEP") == nil {
		t.Errorf("full restore of filter touched nat")
	}
}

func TestFakeRestoreErrorsAreAtomic(t *testing.T) {
	base := "*filter\n:FOO - [0:0]\n:BAR - [0:0]\n-A INPUT -j FOO\n-A FOO -j ACCEPT\nCOMMIT\n"
	tests := []struct {
		name string
		text string
		line int
		msg  string
	}{
		{"jump to missing chain", "*nat\n:A - [0:0]\nCOMMIT\n*filter\n:B - [0:0]\n-A B -j NOPE\nCOMMIT\n", 6, "jump to chain NOPE, which does not exist"},
		{"jump to chain declared later", "*filter\n:B - [0:0]\n-A B -j C\n:C - [0:0]\nCOMMIT\n", 3, "jump to chain C"},
		{"jump to chain in another table", "*filter\n-A INPUT -j KUBE-SERVICES\nCOMMIT\n", 2, "does not exist in table filter"},
		{"append to missing chain", "*filter\n-A NOPE -j ACCEPT\nCOMMIT\n", 2, "chain NOPE does not exist"},
		{"delete referenced chain", "*filter\n-F FOO\n-X FOO\nCOMMIT\n", 3, "referenced from chain INPUT"},
		{"delete non-empty chain", "*filter\n-X FOO\nCOMMIT\n", 2, "still has 1 rules"},
		{"delete missing chain", "*filter\n-X NOPE\nCOMMIT\n", 2, "chain NOPE does not exist"},
		{"delete built-in chain", "*filter\n-X INPUT\nCOMMIT\n", 2, "cannot delete built-in chain"},
		{"insert too far", "*filter\n-I FOO 3 -j ACCEPT\nCOMMIT\n", 2, "cannot insert at position 3"},
		{"delete missing rule", "*filter\n-D FOO -j DROP\nCOMMIT\n", 2, "no such rule"},
		{"delete rule number too big", "*filter\n-D FOO 2\nCOMMIT\n", 2, "cannot delete rule 2"},
		{"unknown match", "*filter\n:X - [0:0]\n-A FOO -m u32 --u32 0x0 -j ACCEPT\nCOMMIT\n", 3, "unsupported match module"},
		{"DNAT outside nat", "*filter\n-A FOO -p tcp -j DNAT --to-destination 1.2.3.4:80\nCOMMIT\n", 2, "only valid in the nat table"},
		{"policy on user chain", "*filter\n:X ACCEPT [0:0]\nCOMMIT\n", 2, "cannot have policy"},
		{"bad builtin policy", "*filter\n:INPUT REJECT [0:0]\nCOMMIT\n", 2, "invalid policy"},
		{"-N existing", "*filter\n-N FOO\nCOMMIT\n", 2, "already exists"},
		{"chain name too long", "*filter\n:" + strings.Repeat("X", 29) + " - [0:0]\nCOMMIT\n", 2, "longer than 28"},
		{"chain named like a target", "*filter\n:ACCEPT - [0:0]\nCOMMIT\n", 2, "reserved"},
		{"jump to built-in chain", "*filter\n-A FOO -j INPUT\nCOMMIT\n", 2, "cannot jump to built-in chain"},
		{"syntax error", "*filter\n:FOO - [0:0]\n-A FOO -j ACCEPT\n", 1, "has no COMMIT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake(IPv4)
			mustRestore(t, f, base, true)
			before := f.Dump().String()
			err := f.Restore(context.Background(), []byte(tt.text), RestoreOptions{NoFlush: true})
			var rerr *RestoreError
			if !errors.As(err, &rerr) {
				t.Fatalf("error = %v, want a *RestoreError", err)
			}
			if rerr.Line != tt.line || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error = %q at line %d, want line %d and %q", err, rerr.Line, tt.line, tt.msg)
			}
			if !strings.Contains(rerr.Lines, ">") {
				t.Errorf("Lines = %q, want the offending line marked", rerr.Lines)
			}
			if after := f.Dump().String(); after != before {
				t.Errorf("failed restore changed the fake:\n%s", after)
			}
		})
	}
}

func TestFakeRestoreTestOnly(t *testing.T) {
	f := NewFake(IPv4)
	err := f.Restore(context.Background(), []byte("*filter\n:FOO - [0:0]\nCOMMIT\n"), RestoreOptions{NoFlush: true, Test: true})
	if err != nil || f.Dump().Chain(TableFilter, "FOO") != nil {
		t.Errorf("--test restore: err %v, FOO created = %v", err, f.Dump().Chain(TableFilter, "FOO") != nil)
	}
}

func TestFakeFailNextRestore(t *testing.T) {
	f := NewFake(IPv4)
	boom := errors.New("boom")
	f.FailNextRestore(boom)
	if err := f.Restore(context.Background(), []byte("*filter\n:FOO - [0:0]\nCOMMIT\n"), RestoreOptions{}); !errors.Is(err, boom) {
		t.Fatalf("error = %v, want boom", err)
	}
	if f.Dump().Chain(TableFilter, "FOO") != nil {
		t.Errorf("failed restore applied its input")
	}
	mustRestore(t, f, "*filter\n:FOO - [0:0]\nCOMMIT\n", true)
	if f.Dump().Chain(TableFilter, "FOO") == nil || f.Restores() != 2 {
		t.Errorf("the failure was not one-shot")
	}
}

func TestFakeFlushTable(t *testing.T) {
	f := NewFake(IPv4)
	mustRestore(t, f, "*nat\n:POSTROUTING DROP [0:0]\n:KUBE-X - [0:0]\n-A PREROUTING -j KUBE-X\nCOMMIT\n*filter\n:KEEP - [0:0]\nCOMMIT\n", true)
	f.FlushTable(TableNAT)
	want := "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING DROP [0:0]\nCOMMIT\n"
	if got := saveAll(t, f, TableNAT); got != want {
		t.Errorf("nat after FlushTable:\n%s\nwant:\n%s", got, want)
	}
	if f.Dump().Chain(TableFilter, "KEEP") == nil {
		t.Errorf("FlushTable(nat) touched filter")
	}
}

func TestFakeChainAndRuleMethods(t *testing.T) {
	ctx := context.Background()
	f := NewFake(IPv4)
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	check("EnsureChain", f.EnsureChain(ctx, TableNAT, "KUBE-SERVICES"))
	check("EnsureChain again", f.EnsureChain(ctx, TableNAT, "KUBE-SERVICES"))
	if ok, _ := f.ChainExists(ctx, TableNAT, "KUBE-SERVICES"); !ok {
		t.Fatalf("ChainExists = false after EnsureChain")
	}
	rule := []string{"-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}
	existed, err := f.EnsureRule(ctx, Append, TableNAT, "OUTPUT", rule...)
	check("EnsureRule", err)
	if existed {
		t.Errorf("EnsureRule reported a new rule as existing")
	}
	_, err = f.EnsureRule(ctx, Prepend, TableNAT, "OUTPUT", "-s", "10.0.0.1", "-j", "ACCEPT")
	check("EnsureRule prepend", err)
	if existed, _ := f.EnsureRule(ctx, Append, TableNAT, "OUTPUT", rule...); !existed {
		t.Errorf("EnsureRule did not find the existing rule")
	}
	out, _ := f.Save(ctx, TableNAT)
	if !strings.Contains(string(out), "-A OUTPUT -s 10.0.0.1 -j ACCEPT\n-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n") {
		t.Errorf("rules in wrong order or form:\n%s", out)
	}
	if _, err := f.EnsureRule(ctx, Append, TableNAT, "OUTPUT", "-j", "NOPE"); err == nil || !strings.Contains(err.Error(), "NOPE") {
		t.Errorf("EnsureRule to a missing chain: %v", err)
	}
	if _, err := f.EnsureRule(ctx, Append, TableNAT, "NOPE", "-j", "ACCEPT"); err == nil {
		t.Errorf("EnsureRule in a missing chain succeeded")
	}
	if err := f.DeleteChain(ctx, TableNAT, "KUBE-SERVICES"); err == nil || !strings.Contains(err.Error(), "referenced") {
		t.Errorf("DeleteChain of a referenced chain: %v", err)
	}
	check("DeleteRule", f.DeleteRule(ctx, TableNAT, "OUTPUT", rule...))
	check("DeleteRule missing", f.DeleteRule(ctx, TableNAT, "OUTPUT", rule...))
	check("DeleteRule missing chain", f.DeleteRule(ctx, TableNAT, "NOPE", rule...))
	check("FlushChain", f.FlushChain(ctx, TableNAT, "OUTPUT"))
	check("FlushChain missing", f.FlushChain(ctx, TableNAT, "NOPE"))
	check("DeleteChain", f.DeleteChain(ctx, TableNAT, "KUBE-SERVICES"))
	check("DeleteChain missing", f.DeleteChain(ctx, TableNAT, "KUBE-SERVICES"))
	if ok, _ := f.ChainExists(ctx, TableNAT, "KUBE-SERVICES"); ok {
		t.Errorf("chain still exists after DeleteChain")
	}
	if err := f.DeleteChain(ctx, TableNAT, "OUTPUT"); err == nil {
		t.Errorf("DeleteChain of a built-in chain succeeded")
	}
}

func TestFakeLoadsSampleRulesets(t *testing.T) {
	for _, tc := range []struct {
		file   string
		family Family
	}{{"testdata/kube-proxy-v4.txt", IPv4}, {"testdata/kube-proxy-v6.txt", IPv6}} {
		text, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		f := NewFake(tc.family)
		mustRestore(t, f, string(text), true)
		// Repeating a --noflush restore leaves user chains as they were
		// (declaring them flushes them) but, as with the real
		// iptables-restore, appends the built-in chains' rules again: those
		// jumps belong in EnsureRule, not in restore input.
		before := f.Dump()
		mustRestore(t, f, string(text), true)
		after := f.Dump()
		for _, table := range before.Tables {
			for _, c := range table.Chains {
				n, m := len(c.Rules), len(after.Chain(table.Name, c.Name).Rules)
				if IsBuiltinChain(table.Name, c.Name) {
					n *= 2
				}
				if m != n {
					t.Errorf("%s: %s/%s has %d rules after a second restore, want %d", tc.file, table.Name, c.Name, m, n)
				}
			}
		}
	}
}

// Each NAT target is refused outside the nat table, and only those.
func TestFakeRestoreNATOnlyTargets(t *testing.T) {
	natOnly := map[string]string{
		"DNAT":       "--to-destination 1.2.3.4:80",
		"SNAT":       "--to-source 1.2.3.4",
		"MASQUERADE": "",
		"REDIRECT":   "--to-ports 8080",
	}
	for target, opts := range natOnly {
		rule := "-A POSTROUTING -p tcp -j " + target + " " + opts + "\n"
		f := NewFake(IPv4)
		if err := f.Restore(context.Background(), []byte("*nat\n"+rule+"COMMIT\n"), RestoreOptions{NoFlush: true}); err != nil {
			t.Errorf("%s in nat: %v", target, err)
		}
		err := f.Restore(context.Background(), []byte("*filter\n"+strings.Replace(rule, "POSTROUTING", "FORWARD", 1)+"COMMIT\n"), RestoreOptions{NoFlush: true})
		if want := "target " + target + " is only valid in the nat table, not filter"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s in filter: error = %v, want one containing %q", target, err, want)
		}
	}
	f := NewFake(IPv4)
	other := "*filter\n-A FORWARD -j MARK --set-xmark 0x1/0x1\n-A FORWARD -j LOG\n-A FORWARD -j REJECT\nCOMMIT\n"
	if err := f.Restore(context.Background(), []byte(other), RestoreOptions{NoFlush: true}); err != nil {
		t.Errorf("other targets in filter: %v", err)
	}
}
