package iptables

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// binaries is the real Interface: it execs the iptables binaries of one
// family and backend.
type binaries struct {
	exec        Executor
	family      Family
	backend     Backend
	waitArgs    []string // "-w", "5", or nothing
	randomFully bool
}

var _ Interface = &binaries{}

// New returns the real Interface for opts.Family, driving the binaries
// through exec (use OSExecutor{}).
//
// It runs a few commands, bounded by opts.DetectTimeout: with
// BackendAuto, the save commands that choose the backend (see
// detectBackend); then "<iptables> --version" to learn whether
// --random-fully is available. It fails if the family or backend is
// unknown or the version command fails; it starts nothing.
func New(exec Executor, opts Options) (Interface, error) {
	opts = opts.Defaults()
	if opts.Family != IPv4 && opts.Family != IPv6 {
		return nil, fmt.Errorf("iptables: unknown family %q", opts.Family)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.DetectTimeout)
	defer cancel()
	r := &binaries{exec: exec, family: opts.Family, backend: opts.Backend}
	switch opts.Backend {
	case BackendNFT, BackendLegacy:
	case BackendAuto:
		r.backend = detectBackend(ctx, exec)
	default:
		return nil, fmt.Errorf("iptables: unknown backend %q (want auto, nft or legacy)", opts.Backend)
	}
	if opts.LockWait > 0 {
		secs := int(math.Ceil(opts.LockWait.Seconds()))
		r.waitArgs = []string{"-w", strconv.Itoa(secs)}
	}
	name := binary(r.family, r.backend, "")
	out, err := exec.Run(ctx, name, []string{"--version"}, nil)
	if err != nil {
		return nil, fmt.Errorf("iptables: finding the version: %w", err)
	}
	v, err := parseVersion(string(out))
	if err != nil {
		return nil, fmt.Errorf("iptables: %s --version: %w", name, err)
	}
	r.randomFully = v.atLeast(randomFullyVersion)
	return r, nil
}

// run runs the family's iptables binary with -w and table arguments.
func (r *binaries) run(ctx context.Context, table Table, args ...string) ([]byte, error) {
	full := append(append([]string{}, r.waitArgs...), "-t", string(table))
	return r.exec.Run(ctx, binary(r.family, r.backend, ""), append(full, args...), nil)
}

func (r *binaries) Restore(ctx context.Context, data []byte, opts RestoreOptions) error {
	args := append([]string{}, r.waitArgs...)
	if opts.NoFlush {
		args = append(args, "--noflush")
	}
	if opts.Counters {
		args = append(args, "--counters")
	}
	if opts.Test {
		args = append(args, "--test")
	}
	_, err := r.exec.Run(ctx, binary(r.family, r.backend, "-restore"), args, data)
	if err == nil {
		return nil
	}
	rerr := &RestoreError{Err: err}
	var ee *ExitError
	if errors.As(err, &ee) {
		rerr.Stderr = ee.Stderr
		rerr.Line = restoreErrorLine(ee.Stderr)
		rerr.Lines = ExtractLines(data, rerr.Line, 3)
	}
	return rerr
}

func (r *binaries) Save(ctx context.Context, table Table) ([]byte, error) {
	return r.exec.Run(ctx, binary(r.family, r.backend, "-save"), []string{"-t", string(table)}, nil)
}

// ListChains implements Interface.
func (r *binaries) ListChains(ctx context.Context, table Table) ([]string, error) {
	if r.backend == BackendNFT {
		ns := ""
		if n, ok := r.exec.(namespaced); ok {
			ns = n.NetworkNamespace()
		}
		return listChainsNetlink(r.family, table, ns)
	}
	// Legacy tables come from the kernel as one blob either way, so a save
	// costs about what any listing does (about a second at 110,000 chains).
	out, err := r.Save(ctx, table)
	if err != nil {
		return nil, err
	}
	return ChainNames(out), nil
}

// SaveChain implements Interface.
func (r *binaries) SaveChain(ctx context.Context, table Table, chain string) ([]byte, error) {
	out, err := r.run(ctx, table, "-S", chain)
	if exitCode(err) == 1 {
		return nil, fmt.Errorf("%s %s/%s: %w", r, table, chain, ErrNoChain)
	}
	return out, err
}

func (r *binaries) ChainExists(ctx context.Context, table Table, chain string) (bool, error) {
	// -S CHAIN 1 prints at most one rule, so this stays cheap for long chains.
	_, err := r.run(ctx, table, "-S", chain, "1")
	return presence(err)
}

// presence reads a check command's result: exit 0 means present, exit 1
// absent; anything else is a failure.
func presence(err error) (bool, error) {
	switch exitCode(err) {
	case 0:
		return true, nil
	case 1:
		return false, nil
	default:
		return false, err
	}
}

func (r *binaries) EnsureChain(ctx context.Context, table Table, chain string) error {
	_, err := r.run(ctx, table, "-N", chain)
	if err == nil || exitCode(err) != 1 {
		return err
	}
	// Exit 1 is "Chain already exists" or a real failure; check which.
	if exists, cerr := r.ChainExists(ctx, table, chain); cerr == nil && exists {
		return nil
	}
	return err
}

func (r *binaries) EnsureRule(ctx context.Context, position Position, table Table, chain string, args ...string) (bool, error) {
	if position != Prepend && position != Append {
		return false, fmt.Errorf("iptables: unknown rule position %q", position)
	}
	exists, err := r.ruleExists(ctx, table, chain, args)
	if err != nil || exists {
		return exists, err
	}
	_, err = r.run(ctx, table, append([]string{string(position), chain}, args...)...)
	return false, err
}

// HasRule implements Interface.
func (r *binaries) HasRule(ctx context.Context, table Table, chain string, args ...string) (bool, error) {
	return r.ruleExists(ctx, table, chain, args)
}

// ruleExists runs -C: exit 0 means present, 1 means absent (or no chain).
func (r *binaries) ruleExists(ctx context.Context, table Table, chain string, args []string) (bool, error) {
	_, err := r.run(ctx, table, append([]string{"-C", chain}, args...)...)
	return presence(err)
}

func (r *binaries) DeleteRule(ctx context.Context, table Table, chain string, args ...string) error {
	exists, err := r.ruleExists(ctx, table, chain, args)
	if err != nil || !exists {
		return err
	}
	_, err = r.run(ctx, table, append([]string{"-D", chain}, args...)...)
	return err
}

func (r *binaries) FlushChain(ctx context.Context, table Table, chain string) error {
	return r.chainOp(ctx, table, "-F", chain)
}

func (r *binaries) DeleteChain(ctx context.Context, table Table, chain string) error {
	return r.chainOp(ctx, table, "-X", chain)
}

// chainOp runs -F or -X, treating a missing chain as success.
func (r *binaries) chainOp(ctx context.Context, table Table, op, chain string) error {
	_, err := r.run(ctx, table, op, chain)
	if err == nil || exitCode(err) != 1 {
		return err
	}
	if exists, cerr := r.ChainExists(ctx, table, chain); cerr == nil && !exists {
		return nil
	}
	return err
}

func (r *binaries) HasRandomFully() bool { return r.randomFully }
func (r *binaries) Backend() Backend     { return r.backend }
func (r *binaries) IsIPv6() bool         { return r.family == IPv6 }

// String describes the instance, e.g. "ip6tables-nft".
func (r *binaries) String() string {
	return strings.TrimSuffix(binary(r.family, r.backend, ""), "-")
}
