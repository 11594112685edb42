package proxier

import (
	"context"
	"time"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/proxier/rules"
)

// canaryTables are where KUBE-PROXY-CANARY lives. If any copy disappears,
// something flushed that table (a firewall reload, an operator's
// "iptables -F"): our rules are gone too and need a full sync.
var canaryTables = []iptables.Table{iptables.TableMangle, iptables.TableNAT, iptables.TableFilter}

// EnsureCanaries creates the canary chains.
func EnsureCanaries(ctx context.Context, ipt iptables.Interface) error {
	for _, t := range canaryTables {
		if err := ipt.EnsureChain(ctx, t, rules.ChainProxyCanary); err != nil {
			return err
		}
	}
	return nil
}

// CanariesPresent reports whether every canary chain still exists and the
// nat and filter tables still jump into KUBE-SERVICES. The jump check
// catches a plain "iptables -t nat -F" (or -t filter), which empties chains
// but deletes none. It only reads: putting things back is the full sync's
// job, in the sync goroutine.
func CanariesPresent(ctx context.Context, ipt iptables.Interface) (bool, error) {
	for _, t := range canaryTables {
		ok, err := ipt.ChainExists(ctx, t, rules.ChainProxyCanary)
		if err != nil || !ok {
			return false, err
		}
	}
	for _, j := range rules.Jumps() {
		if j.To != rules.ChainServices {
			continue
		}
		table := iptables.Table(j.Table)
		if ok, err := ipt.ChainExists(ctx, table, rules.ChainServices); err != nil || !ok {
			return false, err
		}
		present, err := ipt.HasRule(ctx, table, j.From, j.Args...)
		if err != nil || !present {
			return false, err
		}
	}
	return true, nil
}

// canaryInterval is how often watchCanary looks: often enough that a flush
// is repaired well within one sync period.
func (p *Proxier) canaryInterval() time.Duration {
	return max(min(p.cfg.SyncPeriod/3, 10*time.Second), 100*time.Millisecond)
}

// watchCanary forces a full sync whenever a canary chain or the jump into
// KUBE-SERVICES vanishes. It only reads, and only once a full sync has
// created the canaries; the sync goroutine puts everything back.
func (p *Proxier) watchCanary(ctx context.Context) {
	ipt := p.cfg.IPTables
	flushed := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.clock.After(p.canaryInterval()):
		}
		if !p.prog.CanariesMade() {
			continue
		}
		checkCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		present, err := CanariesPresent(checkCtx, ipt)
		cancel()
		switch {
		case err != nil:
			p.log.Error(err, "Canary check failed")
		case !present && !flushed:
			p.log.Info("Canary chain missing: iptables was flushed; forcing a full resync")
			p.requestFullSync()
		case !present:
			p.requestFullSync() // still missing: the full sync has not run yet
		}
		flushed = err == nil && !present
	}
}

// fullSyncRequested is read by the sync goroutine.
func (p *Proxier) requestFullSync() {
	p.fullRequested.Store(true)
	p.Sync()
}
