package iptables

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// call is one command the scriptedExec saw.
type call struct {
	argv  string // name and args joined by spaces
	stdin string
}

// reply is what scriptedExec answers for a command line.
type reply struct {
	stdout string
	code   int // non-zero: return an *ExitError
	stderr string
}

// scriptedExec is a fake Executor that records every call and answers from
// a table keyed by the full command line; unknown commands fail with exit 127.
type scriptedExec struct {
	replies map[string]reply
	calls   []call
}

func (e *scriptedExec) Run(_ context.Context, name string, args []string, stdin []byte) ([]byte, error) {
	argv := strings.Join(append([]string{name}, args...), " ")
	e.calls = append(e.calls, call{argv, string(stdin)})
	r, ok := e.replies[argv]
	if !ok {
		return nil, &ExitError{Name: name, Args: args, Code: 127, Stderr: "not found"}
	}
	if r.code != 0 {
		return []byte(r.stdout), &ExitError{Name: name, Args: args, Code: r.code, Stderr: r.stderr}
	}
	return []byte(r.stdout), nil
}

func (e *scriptedExec) argvs() []string {
	var out []string
	for _, c := range e.calls {
		out = append(out, c.argv)
	}
	return out
}

func newTestRunner(t *testing.T, e *scriptedExec, opts Options) Interface {
	t.Helper()
	if opts.Backend == "" {
		opts.Backend = BackendNFT
	}
	e.replies[binary(opts.Defaults().Family, opts.Backend, "")+" --version"] = reply{stdout: "iptables v1.8.9 (nf_tables)\n"}
	ipt, err := New(e, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.calls = nil
	return ipt
}

func TestNewVersionAndFamily(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		versionCmd string
		version    string
		wantRandom bool
		wantErr    string
	}{
		{"nft v4", Options{Backend: BackendNFT}, "iptables-nft --version", "iptables v1.8.9 (nf_tables)", true, ""},
		{"legacy v6", Options{Family: IPv6, Backend: BackendLegacy}, "ip6tables-legacy --version", "ip6tables v1.8.9 (legacy)", true, ""},
		{"exactly 1.6.2", Options{Backend: BackendLegacy}, "iptables-legacy --version", "iptables v1.6.2", true, ""},
		{"too old", Options{Backend: BackendLegacy}, "iptables-legacy --version", "iptables v1.6.1", false, ""},
		{"garbage version", Options{Backend: BackendNFT}, "iptables-nft --version", "what?", false, "no version"},
		{"bad family", Options{Family: "ipx"}, "", "", false, "unknown family"},
		{"bad backend", Options{Backend: "ebpf"}, "", "", false, "unknown backend"},
		{"missing binary", Options{Backend: BackendNFT}, "", "", false, "exit status 127"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &scriptedExec{replies: map[string]reply{}}
			if tt.versionCmd != "" {
				e.replies[tt.versionCmd] = reply{stdout: tt.version + "\n"}
			}
			ipt, err := New(e, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if ipt.HasRandomFully() != tt.wantRandom {
				t.Errorf("HasRandomFully = %v, want %v", ipt.HasRandomFully(), tt.wantRandom)
			}
			if ipt.IsIPv6() != (tt.opts.Family == IPv6) || ipt.Backend() != tt.opts.Backend {
				t.Errorf("IsIPv6 = %v, Backend = %q", ipt.IsIPv6(), ipt.Backend())
			}
		})
	}
}

func TestDetectBackend(t *testing.T) {
	present := reply{stdout: ""} // exit 0: "-S CHAIN 1" found the chain
	builtin := func(chain string, rules int) reply {
		return reply{stdout: "-P " + chain + " ACCEPT\n" + strings.Repeat("-A "+chain+" -j ACCEPT\n", rules)}
	}
	tests := []struct {
		name    string
		replies map[string]reply
		want    Backend
	}{
		{"nothing anywhere: nft", map[string]reply{}, BackendNFT},
		{"hint chain in legacy mangle", map[string]reply{
			"iptables-legacy -t mangle -S KUBE-IPTABLES-HINT 1": present,
			"iptables-nft -t filter -S INPUT":                   builtin("INPUT", 5),
		}, BackendLegacy},
		{"canary chain in nft v6 mangle", map[string]reply{
			"ip6tables-nft -t mangle -S KUBE-KUBELET-CANARY 1": present,
			"iptables-legacy -t filter -S INPUT":               builtin("INPUT", 5),
		}, BackendNFT},
		{"KUBE- chains beat rule counts", map[string]reply{
			"iptables-legacy -t nat -S KUBE-SERVICES 1": present,
			"iptables-nft -t filter -S INPUT":           builtin("INPUT", 5),
		}, BackendLegacy},
		{"kube-proxy's canary counts as KUBE- chains", map[string]reply{
			"ip6tables-legacy -t mangle -S KUBE-PROXY-CANARY 1": present,
			"iptables-nft -t filter -S INPUT":                   builtin("INPUT", 5),
		}, BackendLegacy},
		{"more legacy rules", map[string]reply{
			"iptables-legacy -t filter -S INPUT": builtin("INPUT", 5),
			"iptables-nft -t filter -S INPUT":    builtin("INPUT", 1),
		}, BackendLegacy},
		{"tie goes to nft", map[string]reply{
			"iptables-legacy -t filter -S INPUT": builtin("INPUT", 5),
			"ip6tables-nft -t nat -S OUTPUT":     builtin("OUTPUT", 5),
		}, BackendNFT},
		{"KUBE- in both: count rules", map[string]reply{
			"iptables-legacy -t nat -S KUBE-SERVICES 1": present,
			"iptables-nft -t nat -S KUBE-SERVICES 1":    present,
			"iptables-legacy -t nat -S PREROUTING":      builtin("PREROUTING", 1),
			"iptables-nft -t nat -S PREROUTING":         builtin("PREROUTING", 1),
			"iptables-nft -t filter -S INPUT":           builtin("INPUT", 5),
		}, BackendNFT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &scriptedExec{replies: tt.replies}
			e.replies[binary(IPv4, tt.want, "")+" --version"] = reply{stdout: "iptables v1.8.9"}
			ipt, err := New(e, Options{})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := ipt.Backend(); got != tt.want {
				t.Errorf("Backend = %q, want %q (calls %q)", got, tt.want, e.argvs())
			}
			// Never a whole-table save: it takes minutes and crashes on
			// tables of 100,000 chains.
			for _, argv := range e.argvs() {
				if strings.Contains(strings.Fields(argv)[0], "-save") {
					t.Errorf("detection ran %q", argv)
				}
			}
		})
	}
}

func TestRunnerArgv(t *testing.T) {
	ctx := context.Background()
	data := []byte("*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n")
	tests := []struct {
		name    string
		opts    Options
		replies map[string]reply
		do      func(Interface) error
		want    []call
	}{{
		name: "restore noflush",
		do:   func(i Interface) error { return i.Restore(ctx, data, RestoreOptions{NoFlush: true}) },
		replies: map[string]reply{
			"iptables-nft-restore -w 5 --noflush": {},
		},
		want: []call{{"iptables-nft-restore -w 5 --noflush", string(data)}},
	}, {
		name: "restore all flags, IPv6 legacy, custom lock wait rounds up",
		opts: Options{Family: IPv6, Backend: BackendLegacy, LockWait: 1500 * time.Millisecond},
		do: func(i Interface) error {
			return i.Restore(ctx, data, RestoreOptions{NoFlush: true, Counters: true, Test: true})
		},
		replies: map[string]reply{
			"ip6tables-legacy-restore -w 2 --noflush --counters --test": {},
		},
		want: []call{{"ip6tables-legacy-restore -w 2 --noflush --counters --test", string(data)}},
	}, {
		name: "restore without lock wait",
		opts: Options{LockWait: -1},
		do:   func(i Interface) error { return i.Restore(ctx, data, RestoreOptions{}) },
		replies: map[string]reply{
			"iptables-nft-restore": {},
		},
		want: []call{{"iptables-nft-restore", string(data)}},
	}, {
		name:    "save",
		do:      func(i Interface) error { _, err := i.Save(ctx, TableNAT); return err },
		replies: map[string]reply{"iptables-nft-save -t nat": {stdout: "*nat\nCOMMIT\n"}},
		want:    []call{{"iptables-nft-save -t nat", ""}},
	}, {
		name:    "ensure chain creates",
		do:      func(i Interface) error { return i.EnsureChain(ctx, TableNAT, "KUBE-X") },
		replies: map[string]reply{"iptables-nft -w 5 -t nat -N KUBE-X": {}},
		want:    []call{{"iptables-nft -w 5 -t nat -N KUBE-X", ""}},
	}, {
		name: "ensure chain that exists",
		do:   func(i Interface) error { return i.EnsureChain(ctx, TableNAT, "KUBE-X") },
		replies: map[string]reply{
			"iptables-nft -w 5 -t nat -N KUBE-X":   {code: 1, stderr: "iptables: Chain already exists."},
			"iptables-nft -w 5 -t nat -S KUBE-X 1": {stdout: "-N KUBE-X\n"},
		},
		want: []call{{"iptables-nft -w 5 -t nat -N KUBE-X", ""}, {"iptables-nft -w 5 -t nat -S KUBE-X 1", ""}},
	}, {
		name: "ensure rule appends when -C says missing",
		do: func(i Interface) error {
			existed, err := i.EnsureRule(ctx, Append, TableNAT, "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")
			if existed {
				return errors.New("existed")
			}
			return err
		},
		replies: map[string]reply{
			"iptables-nft -w 5 -t nat -C OUTPUT -m comment --comment kubernetes service portals -j KUBE-SERVICES": {code: 1},
			"iptables-nft -w 5 -t nat -A OUTPUT -m comment --comment kubernetes service portals -j KUBE-SERVICES": {},
		},
		want: []call{
			{"iptables-nft -w 5 -t nat -C OUTPUT -m comment --comment kubernetes service portals -j KUBE-SERVICES", ""},
			{"iptables-nft -w 5 -t nat -A OUTPUT -m comment --comment kubernetes service portals -j KUBE-SERVICES", ""},
		},
	}, {
		name: "ensure rule that exists",
		do: func(i Interface) error {
			existed, err := i.EnsureRule(ctx, Prepend, TableFilter, "INPUT", "-j", "KUBE-FIREWALL")
			if !existed {
				return errors.New("not existed")
			}
			return err
		},
		replies: map[string]reply{"iptables-nft -w 5 -t filter -C INPUT -j KUBE-FIREWALL": {}},
		want:    []call{{"iptables-nft -w 5 -t filter -C INPUT -j KUBE-FIREWALL", ""}},
	}, {
		name: "ensure rule prepends",
		do: func(i Interface) error {
			_, err := i.EnsureRule(ctx, Prepend, TableFilter, "INPUT", "-j", "KUBE-FIREWALL")
			return err
		},
		replies: map[string]reply{
			"iptables-nft -w 5 -t filter -C INPUT -j KUBE-FIREWALL": {code: 1},
			"iptables-nft -w 5 -t filter -I INPUT -j KUBE-FIREWALL": {},
		},
		want: []call{{"iptables-nft -w 5 -t filter -C INPUT -j KUBE-FIREWALL", ""}, {"iptables-nft -w 5 -t filter -I INPUT -j KUBE-FIREWALL", ""}},
	}, {
		name: "delete rule present",
		do:   func(i Interface) error { return i.DeleteRule(ctx, TableFilter, "INPUT", "-j", "X") },
		replies: map[string]reply{
			"iptables-nft -w 5 -t filter -C INPUT -j X": {},
			"iptables-nft -w 5 -t filter -D INPUT -j X": {},
		},
		want: []call{{"iptables-nft -w 5 -t filter -C INPUT -j X", ""}, {"iptables-nft -w 5 -t filter -D INPUT -j X", ""}},
	}, {
		name:    "delete rule missing is fine",
		do:      func(i Interface) error { return i.DeleteRule(ctx, TableFilter, "INPUT", "-j", "X") },
		replies: map[string]reply{"iptables-nft -w 5 -t filter -C INPUT -j X": {code: 1}},
		want:    []call{{"iptables-nft -w 5 -t filter -C INPUT -j X", ""}},
	}, {
		name: "chain exists",
		do: func(i Interface) error {
			ok, err := i.ChainExists(ctx, TableNAT, "KUBE-X")
			if !ok {
				return errors.New("not found")
			}
			return err
		},
		replies: map[string]reply{"iptables-nft -w 5 -t nat -S KUBE-X 1": {}},
		want:    []call{{"iptables-nft -w 5 -t nat -S KUBE-X 1", ""}},
	}, {
		name: "flush missing chain is fine",
		do:   func(i Interface) error { return i.FlushChain(ctx, TableNAT, "KUBE-X") },
		replies: map[string]reply{
			"iptables-nft -w 5 -t nat -F KUBE-X":   {code: 1},
			"iptables-nft -w 5 -t nat -S KUBE-X 1": {code: 1},
		},
		want: []call{{"iptables-nft -w 5 -t nat -F KUBE-X", ""}, {"iptables-nft -w 5 -t nat -S KUBE-X 1", ""}},
	}, {
		name:    "delete chain",
		do:      func(i Interface) error { return i.DeleteChain(ctx, TableNAT, "KUBE-X") },
		replies: map[string]reply{"iptables-nft -w 5 -t nat -X KUBE-X": {}},
		want:    []call{{"iptables-nft -w 5 -t nat -X KUBE-X", ""}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &scriptedExec{replies: tt.replies}
			ipt := newTestRunner(t, e, tt.opts)
			if err := tt.do(ipt); err != nil {
				t.Fatalf("error: %v (calls %q)", err, e.argvs())
			}
			if len(e.calls) != len(tt.want) {
				t.Fatalf("calls = %q, want %q", e.calls, tt.want)
			}
			for i := range tt.want {
				if e.calls[i] != tt.want[i] {
					t.Errorf("call %d = %q, want %q", i, e.calls[i], tt.want[i])
				}
			}
		})
	}
}

func TestRunnerErrors(t *testing.T) {
	ctx := context.Background()
	// A failing -X on a chain that still exists (e.g. referenced) is an error.
	e := &scriptedExec{replies: map[string]reply{
		"iptables-nft -w 5 -t nat -X KUBE-X":           {code: 1, stderr: "iptables: Too many links."},
		"iptables-nft -w 5 -t nat -S KUBE-X 1":         {},
		"iptables-nft -w 5 -t nat -C OUTPUT -j KUBE-X": {code: 2, stderr: "Bad argument"},
		"iptables-nft -w 5 -t nat -S KUBE-Y 1":         {code: 4, stderr: "Another app is currently holding the xtables lock."},
	}}
	ipt := newTestRunner(t, e, Options{})
	if err := ipt.DeleteChain(ctx, TableNAT, "KUBE-X"); err == nil || !strings.Contains(err.Error(), "Too many links") {
		t.Errorf("DeleteChain error = %v", err)
	}
	if _, err := ipt.EnsureRule(ctx, Append, TableNAT, "OUTPUT", "-j", "KUBE-X"); exitCode(err) != 2 {
		t.Errorf("EnsureRule with a bad rule: %v", err)
	}
	if _, err := ipt.ChainExists(ctx, TableNAT, "KUBE-Y"); err == nil || !strings.Contains(err.Error(), "xtables lock") {
		t.Errorf("ChainExists with the lock held: %v", err)
	}
	if _, err := ipt.EnsureRule(ctx, "-Z", TableNAT, "OUTPUT"); err == nil {
		t.Errorf("EnsureRule with a bad position succeeded")
	}
}

func TestRunnerRestoreError(t *testing.T) {
	data := []byte("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-X - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-X\n-A KUBE-SVC-X -j KUBE-SEP-GONE\n-A KUBE-SVC-X -j RETURN\nCOMMIT\n")
	e := &scriptedExec{replies: map[string]reply{
		"iptables-nft-restore -w 5 --noflush": {code: 2, stderr: "iptables-restore v1.8.9 (legacy): Couldn't load target `KUBE-SEP-GONE':No such file or directory\n\nError occurred at line: 5\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n"},
	}}
	ipt := newTestRunner(t, e, Options{})
	err := ipt.Restore(context.Background(), data, RestoreOptions{NoFlush: true})
	var rerr *RestoreError
	if !errors.As(err, &rerr) {
		t.Fatalf("error = %v, want *RestoreError", err)
	}
	want := "  2: :KUBE-SERVICES - [0:0]\n  3: :KUBE-SVC-X - [0:0]\n  4: -A KUBE-SERVICES -j KUBE-SVC-X\n> 5: -A KUBE-SVC-X -j KUBE-SEP-GONE\n  6: -A KUBE-SVC-X -j RETURN\n  7: COMMIT\n"
	if rerr.Line != 5 || rerr.Lines != want {
		t.Errorf("Line = %d, Lines =\n%s\nwant 5 and\n%s", rerr.Line, rerr.Lines, want)
	}
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "KUBE-SEP-GONE") || !strings.Contains(err.Error(), "at line 5") {
		t.Errorf("error does not say what and where: %v", err)
	}
}
