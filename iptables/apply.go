package iptables

import (
	"fmt"
	"slices"
)

// Apply applies parsed restore input to d with iptables-restore's
// semantics, atomically: on error d is left exactly as it was.
//
// For each table block, in order:
//   - without noFlush the table is first emptied: every chain flushed and
//     every user-defined chain deleted (built-in policies are kept);
//   - ":CHAIN -" creates a user chain, or flushes it if it exists;
//     ":BUILTIN POLICY" only sets the policy (built-in chains are never
//     flushed by a declaration, matching iptables-restore --noflush);
//   - -N creates a chain that must not exist; -A appends; -I inserts at a
//     1-based position (at most one past the end); -D deletes the first
//     identical rule or the numbered rule; -F flushes one chain or all;
//     -X deletes a user chain, which must exist, be empty and be
//     unreferenced; -P sets a built-in chain's policy.
//
// Every rule must parse with ParseRuleArgs, and its -j/-g must name a
// standard target or a chain that exists in the table at that point (as
// with iptables-legacy, which resolves jumps line by line; nft resolves them
// at COMMIT, so this is the stricter of the two). NAT targets are only
// allowed in the nat table. Errors are *LineError.
func (d *Dump) Apply(r *Restore, noFlush bool) error {
	return d.apply(r, noFlush, true)
}

// apply is Apply; with strict false, rule arguments are not interpreted, so
// that any iptables-save output loads (see ParseDump).
func (d *Dump) apply(r *Restore, noFlush, strict bool) error {
	next := d.Clone()
	for _, rt := range r.Tables {
		t := next.Table(rt.Name)
		if t == nil {
			t = newTableDump(rt.Name)
			next.Tables = append(next.Tables, t)
		}
		if !noFlush {
			t.removeChains(func(c *Chain) bool { return !IsBuiltinChain(t.Name, c.Name) })
			for _, c := range t.Chains {
				c.Rules = nil
			}
		}
		for _, op := range rt.Ops {
			if err := t.apply(op, strict); err != nil {
				return &LineError{Line: op.Line, Text: op.Text, Msg: err.Error()}
			}
		}
	}
	*d = *next
	return nil
}

// apply applies one operation to t.
func (t *TableDump) apply(op Op, strict bool) error {
	c := t.Chain(op.Chain)
	needChain := func() error {
		if c == nil {
			return fmt.Errorf("chain %s does not exist in table %s", op.Chain, t.Name)
		}
		return nil
	}
	switch op.Kind {
	case OpDeclare, OpNewChain:
		if err := validChainName(op.Chain); err != nil {
			return err
		}
		if IsBuiltinChain(t.Name, op.Chain) {
			if op.Kind == OpNewChain {
				return fmt.Errorf("chain %s already exists in table %s", op.Chain, t.Name)
			}
			return c.setPolicy(op.Policy, true)
		}
		if op.Kind == OpDeclare && op.Policy != "-" {
			return fmt.Errorf("user-defined chain %s cannot have policy %q (use \"-\")", op.Chain, op.Policy)
		}
		if c != nil {
			if op.Kind == OpNewChain {
				return fmt.Errorf("chain %s already exists in table %s", op.Chain, t.Name)
			}
			c.Rules = nil
			return nil
		}
		t.addChain(&Chain{Name: op.Chain, Policy: "-"})
	case OpPolicy:
		if err := needChain(); err != nil {
			return err
		}
		if !IsBuiltinChain(t.Name, op.Chain) {
			return fmt.Errorf("cannot set a policy on user-defined chain %s", op.Chain)
		}
		return c.setPolicy(op.Policy, false)
	case OpAppend, OpInsert:
		if err := needChain(); err != nil {
			return err
		}
		if strict {
			if err := t.checkRule(op.Args); err != nil {
				return err
			}
		}
		rule := &Rule{Raw: op.Text, Args: slices.Clone(op.Args), Line: op.Line}
		if op.Kind == OpAppend {
			c.Rules = append(c.Rules, rule)
			return nil
		}
		if op.Position > len(c.Rules)+1 {
			return fmt.Errorf("cannot insert at position %d of chain %s, which has %d rules", op.Position, op.Chain, len(c.Rules))
		}
		rule.Raw = rule.String(op.Chain)
		c.Rules = slices.Insert(c.Rules, op.Position-1, rule)
	case OpDelete:
		if err := needChain(); err != nil {
			return err
		}
		i := op.Position - 1
		if op.Position == 0 {
			i = slices.IndexFunc(c.Rules, func(r *Rule) bool { return slices.Equal(r.Args, op.Args) })
			if i < 0 {
				return fmt.Errorf("no such rule in chain %s", op.Chain)
			}
		} else if i >= len(c.Rules) {
			return fmt.Errorf("cannot delete rule %d of chain %s, which has %d rules", op.Position, op.Chain, len(c.Rules))
		}
		c.Rules = slices.Delete(c.Rules, i, i+1)
	case OpFlush:
		if op.Chain == "" {
			for _, c := range t.Chains {
				c.Rules = nil
			}
			return nil
		}
		if err := needChain(); err != nil {
			return err
		}
		c.Rules = nil
	case OpDeleteChain:
		if err := needChain(); err != nil {
			return err
		}
		if IsBuiltinChain(t.Name, op.Chain) {
			return fmt.Errorf("cannot delete built-in chain %s", op.Chain)
		}
		if len(c.Rules) > 0 {
			return fmt.Errorf("cannot delete chain %s: it still has %d rules", op.Chain, len(c.Rules))
		}
		if from := t.referrer(op.Chain); from != "" {
			return fmt.Errorf("cannot delete chain %s: it is referenced from chain %s", op.Chain, from)
		}
		t.removeChains(func(c *Chain) bool { return c.Name == op.Chain })
	default:
		return fmt.Errorf("unsupported operation %s", op.Kind)
	}
	return nil
}

// setPolicy sets a built-in chain's policy; "-" leaves it unchanged when
// allowDash (a declaration), as iptables-restore does.
func (c *Chain) setPolicy(policy string, allowDash bool) error {
	switch policy {
	case "ACCEPT", "DROP":
		c.Policy = policy
	case "-":
		if !allowDash {
			return fmt.Errorf("invalid policy %q for chain %s", policy, c.Name)
		}
	default:
		return fmt.Errorf("invalid policy %q for built-in chain %s", policy, c.Name)
	}
	return nil
}

// checkRule checks that args parse and that the target can be used in t.
func (t *TableDump) checkRule(args []string) error {
	spec, err := ParseRuleArgs(args)
	if err != nil {
		return err
	}
	target := spec.Target.Name
	switch {
	case spec.Target.IsChain():
		if IsBuiltinChain(t.Name, target) {
			return fmt.Errorf("cannot jump to built-in chain %s", target)
		}
		if t.Chain(target) == nil {
			return fmt.Errorf("jump to chain %s, which does not exist in table %s", target, t.Name)
		}
	case isNATOnlyTarget(target) && t.Name != TableNAT:
		return fmt.Errorf("target %s is only valid in the nat table, not %s", target, t.Name)
	}
	return nil
}

// referrer returns the name of a chain with a rule jumping to chain, or "".
func (t *TableDump) referrer(chain string) string {
	for _, c := range t.Chains {
		for _, r := range c.Rules {
			if ruleTarget(r.Args) == chain {
				return c.Name
			}
		}
	}
	return ""
}

// validChainName rejects names iptables would refuse.
func validChainName(name string) error {
	switch {
	case name == "" || name[0] == '-' || name[0] == '!':
		return fmt.Errorf("invalid chain name %q", name)
	case len(name) > 28:
		return fmt.Errorf("chain name %q is longer than 28 characters", name)
	case IsStandardTarget(name):
		return fmt.Errorf("chain name %q is reserved for a target", name)
	}
	return nil
}

// ruleTarget returns the -j/-g target of a rule's arguments without
// interpreting anything else, or "".
func ruleTarget(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-j", "--jump", "-g", "--goto":
			return args[i+1]
		}
	}
	return ""
}
