package iptables

import (
	"context"
	"errors"
	"time"
)

// Table names an iptables table.
type Table string

// The tables svcproxy knows about.
const (
	TableFilter   Table = "filter"
	TableNAT      Table = "nat"
	TableMangle   Table = "mangle"
	TableRaw      Table = "raw"
	TableSecurity Table = "security"
)

// Family selects IPv4 (iptables-*) or IPv6 (ip6tables-*) binaries.
type Family string

const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// Backend selects which iptables flavour to drive.
type Backend string

const (
	// BackendAuto picks whichever backend already holds rules (see New).
	BackendAuto   Backend = "auto"
	BackendNFT    Backend = "nft"
	BackendLegacy Backend = "legacy"
)

// Position says where EnsureRule puts a new rule.
type Position string

const (
	Prepend Position = "-I"
	Append  Position = "-A"
)

// RestoreOptions are the iptables-restore flags a caller may ask for.
type RestoreOptions struct {
	// NoFlush keeps tables' existing contents (--noflush); without it every
	// table mentioned in the input is replaced whole.
	NoFlush bool
	// Counters restores the [packets:bytes] counters given in the input.
	Counters bool
	// Test only parses and checks the input (--test); nothing is changed.
	Test bool
}

// Interface is what the proxier needs from iptables. All methods are safe
// for concurrent use; IPv4 and IPv6 are separate instances.
type Interface interface {
	// Restore feeds data to iptables-restore, with -w and the flags opts
	// asks for. The whole input is applied atomically or not at all. On
	// failure the error is a *RestoreError naming the offending line.
	Restore(ctx context.Context, data []byte, opts RestoreOptions) error
	// Save returns iptables-save output for one table. Its cost grows with
	// the whole table: on iptables-nft 1.8.9 a table of 100,000 chains takes
	// minutes and crashes iptables-nft-save. Nothing on the daemon's paths
	// calls it; use ListChains and SaveChain.
	Save(ctx context.Context, table Table) ([]byte, error)
	// ListChains returns the name of every chain in table, built-in ones
	// included, without reading any rule: about a second at 100,000 chains
	// (nf_tables through one netlink dump; legacy through iptables-save,
	// which is fast there). A table that does not exist has no chains.
	ListChains(ctx context.Context, table Table) ([]string, error)
	// SaveChain returns one chain as "iptables -S CHAIN" prints it: "-N
	// CHAIN" (or "-P CHAIN POLICY" for a built-in chain), then one
	// "-A CHAIN ..." line per rule. Its cost follows the chain, not the
	// table. A chain that does not exist is an error wrapping ErrNoChain.
	SaveChain(ctx context.Context, table Table, chain string) ([]byte, error)
	// EnsureChain creates chain in table unless it already exists.
	EnsureChain(ctx context.Context, table Table, chain string) error
	// EnsureRule adds the rule args to chain at position unless an identical
	// rule is already there, and reports whether it was.
	EnsureRule(ctx context.Context, position Position, table Table, chain string, args ...string) (existed bool, err error)
	// HasRule reports whether chain holds a rule identical to args (as
	// iptables -C checks it). A missing chain is reported as no rule.
	HasRule(ctx context.Context, table Table, chain string, args ...string) (bool, error)
	// DeleteRule deletes the rule args from chain. A missing rule or chain
	// is not an error.
	DeleteRule(ctx context.Context, table Table, chain string, args ...string) error
	// ChainExists reports whether chain exists in table.
	ChainExists(ctx context.Context, table Table, chain string) (bool, error)
	// FlushChain removes all rules from chain. A missing chain is not an error.
	FlushChain(ctx context.Context, table Table, chain string) error
	// DeleteChain deletes chain, which must be empty and unreferenced, as
	// with iptables -X. A missing chain is not an error.
	DeleteChain(ctx context.Context, table Table, chain string) error
	// HasRandomFully reports whether MASQUERADE --random-fully is available.
	HasRandomFully() bool
	// Backend returns BackendNFT or BackendLegacy.
	Backend() Backend
	// IsIPv6 reports whether this instance drives ip6tables.
	IsIPv6() bool
}

// ErrNoChain is wrapped by SaveChain's error when the chain does not exist.
var ErrNoChain = errors.New("no such chain")

// Options configure New.
type Options struct {
	// Family is IPv4 (the default) or IPv6.
	Family Family
	// Backend is BackendAuto (the default), BackendNFT or BackendLegacy.
	Backend Backend
	// LockWait is how long to wait for the xtables lock (-w). Zero means the
	// default of 5s; a negative value omits -w entirely.
	LockWait time.Duration
	// DetectTimeout bounds the commands New runs to detect the backend and
	// version. Zero means 30s.
	DetectTimeout time.Duration
}

// Defaults returns o with zero fields set to their defaults.
func (o Options) Defaults() Options {
	if o.Family == "" {
		o.Family = IPv4
	}
	if o.Backend == "" {
		o.Backend = BackendAuto
	}
	if o.LockWait == 0 {
		o.LockWait = 5 * time.Second
	}
	if o.DetectTimeout == 0 {
		o.DetectTimeout = 30 * time.Second
	}
	return o
}
